-- Run-time state of each plugin that an operator changed: enabled or not (and why), and its
-- configuration as set through the API. Absent rows mean "as the configuration file says".
CREATE TABLE nexus_plugin_state (
    plugin_id TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    reason TEXT,
    config TEXT,
    updated_at BIGINT NOT NULL
);
