-- keyledger's PostgreSQL schema, version 2 (docs/log-format.md, "PostgreSQL store").
-- What the witnesses said of the log, kept for every node (docs/architecture.md, "The log
-- store seam"). Written by the node holding the `jobs` lease, outside the log head's
-- transaction (a witness never holds up an append), like the leases; read by every node.
-- `keyledger_cosigned` (version 1) keeps one row: the latest cosigned checkpoint.

-- The latest fork alarm each witness raised (docs/operations.md, "Witnesses").
CREATE TABLE keyledger_fork_alarms (
    witness      text    PRIMARY KEY,    -- the configured witness's name
    kind         text    NOT NULL CHECK (kind IN ('witness_ahead', 'foreign_cosignature')),
    log_size     bigint  NOT NULL CHECK (log_size >= 0),
    log_root     bytea   NOT NULL CHECK (length(log_root) = 32),
    witness_size bigint  CHECK (witness_size >= 0),
    detected_at  timestamptz NOT NULL,
    cleared      boolean NOT NULL DEFAULT false   -- the witness cosigned since
);
