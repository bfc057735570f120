-- keyledger's PostgreSQL schema, version 1 (docs/log-format.md, "PostgreSQL store").
-- Every table is written only inside the transaction that holds the log head
-- (`SELECT ... FROM keyledger_head FOR UPDATE`), except the leases.

-- The ledger's identity: which signing key and pepper every node must hold.
CREATE TABLE keyledger_identity (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    origin       text    NOT NULL,          -- the checkpoint origin line
    log_format   integer NOT NULL,          -- 2: RFC 6962 SHA-256 tree
    verifier_key text    NOT NULL,          -- C2SP note verifier key of the signing key
    pepper_check bytea   NOT NULL,          -- keyed BLAKE3 of a fixed label under the pepper
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The events, exactly the bytes a segment file holds for them (0x01 || postcard).
CREATE TABLE keyledger_events (
    seq    bigint PRIMARY KEY CHECK (seq >= 0),
    record bytea  NOT NULL,
    leaf   bytea  NOT NULL CHECK (length(leaf) = 32)   -- SHA-256(0x00 || record)
);

-- The log head: the one row every append locks. `frontier` is the concatenation of the
-- 32-byte hashes of the tree's compact range (its perfect subtrees, largest first).
CREATE TABLE keyledger_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    size      bigint NOT NULL CHECK (size >= 0),
    root      bytea  NOT NULL CHECK (length(root) = 32),
    frontier  bytea  NOT NULL
);

-- Signed checkpoints (C2SP signed notes); one per size, never two roots for one size.
CREATE TABLE keyledger_checkpoints (
    size      bigint PRIMARY KEY,
    root      bytea  NOT NULL CHECK (length(root) = 32),
    note      text   NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now()
);

-- The latest checkpoint with the witnesses' cosignatures (docs/witness.md).
CREATE TABLE keyledger_cosigned (
    size bigint PRIMARY KEY,
    note text   NOT NULL
);

-- Leases of the jobs that run on one node at a time (webhook delivery, witness submission).
CREATE TABLE keyledger_leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
