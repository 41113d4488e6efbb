-- A deployment's time series (GET /deploy/{id}/stats): one row per
-- deployment and sample. Times are Unix microseconds, UTC.
CREATE TABLE stats (
	deploy_id TEXT NOT NULL,
	owner TEXT NOT NULL,
	at_us BIGINT NOT NULL,
	sample TEXT NOT NULL,
	PRIMARY KEY (deploy_id, at_us)
);
CREATE INDEX stats_at ON stats (at_us);
