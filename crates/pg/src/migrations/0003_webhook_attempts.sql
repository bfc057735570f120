-- keyledger's PostgreSQL schema, version 3 (docs/log-format.md, "PostgreSQL store").
-- The webhook delivery attempts of the node holding the `jobs` lease, shared so that every
-- node's outbox follows them (docs/webhooks.md, "Several nodes"): a standby forgets what was
-- delivered or given up and keeps the retry schedule, so the node that takes over sends only
-- what was not settled. Appended by the holder through one connection (in commit order),
-- read by every node in `serial` order, pruned by the holder after the attempt retention.
CREATE TABLE keyledger_webhook_attempts (
    serial      bigserial   PRIMARY KEY,
    node        text        NOT NULL,   -- the node that made the attempt
    workspace   text        NOT NULL,
    attempt     text        NOT NULL,   -- the attempt record as JSON (never a secret, signature or URL)
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX keyledger_webhook_attempts_recorded_at ON keyledger_webhook_attempts (recorded_at);
