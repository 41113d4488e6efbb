-- A deployment's time series (GET /deploy/{id}/stats): one row per
-- deployment and sample, kept for the retention (--stats-retention).
-- Times are Unix microseconds, UTC. sample is meter.Sample's JSON; active
-- is 1 when a request was held, in flight or finished in the sample (the
-- deployment's last request is the newest active row).
CREATE TABLE stats (
	deploy_id TEXT NOT NULL,
	owner TEXT NOT NULL,
	at_us BIGINT NOT NULL,
	active INTEGER NOT NULL,
	sample TEXT NOT NULL,
	PRIMARY KEY (deploy_id, at_us)
);
CREATE INDEX stats_at ON stats (at_us);
CREATE INDEX stats_active ON stats (deploy_id, active, at_us);
