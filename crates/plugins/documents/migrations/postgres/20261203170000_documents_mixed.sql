-- Whether some document holds a boolean or an object on an indexed path. While none does
-- (and the index is not multikey), a JSON value alone tells a number from a string, so
-- conditions and `$group` stages on the path compile to the bare indexed expression and the
-- index can answer them without reading the documents. Existing indexes start conservative.
ALTER TABLE document_indexes ADD COLUMN mixed BOOLEAN NOT NULL DEFAULT TRUE;
