-- The ledger: one row per (instance, kind); the first fact recorded wins.
-- Times are Unix microseconds, UTC.
CREATE TABLE facts (
	instance_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	deploy_id TEXT NOT NULL,
	owner TEXT NOT NULL,
	model TEXT NOT NULL,
	gpu TEXT NOT NULL,
	num_gpus INTEGER NOT NULL,
	at_us BIGINT NOT NULL,
	reason TEXT NOT NULL,
	recorded_us BIGINT NOT NULL,
	PRIMARY KEY (instance_id, kind)
);
CREATE INDEX facts_kind_at ON facts (kind, at_us);
CREATE INDEX facts_owner ON facts (owner, kind, at_us);

-- Requests and tokens per deployment and hour (hour_us: the hour's start).
CREATE TABLE tokens (
	deploy_id TEXT NOT NULL,
	hour_us BIGINT NOT NULL,
	owner TEXT NOT NULL,
	requests BIGINT NOT NULL,
	prompt_tokens BIGINT NOT NULL,
	completion_tokens BIGINT NOT NULL,
	PRIMARY KEY (deploy_id, hour_us)
);
CREATE INDEX tokens_owner_hour ON tokens (owner, hour_us);

-- Spending limits and what was notified of them this month.
CREATE TABLE accounts (
	owner TEXT NOT NULL PRIMARY KEY,
	spending_limit_usd DOUBLE PRECISION NOT NULL,
	webhook_url TEXT NOT NULL,
	notified INTEGER NOT NULL,
	notified_month_us BIGINT NOT NULL
);
