-- Every event written to the kernel's outbox from now on is pending for the webhooks too
-- (see nexus_kernel::outbox): registered here, so that it holds from the first start.
INSERT INTO nexus_outbox_consumers (name, created_at) VALUES ('webhooks', 0) ON CONFLICT (name) DO NOTHING;
