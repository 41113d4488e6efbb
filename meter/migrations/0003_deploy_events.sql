-- A deployment's page reads its events (instances placed, ready, stopped,
-- failed; scale decisions; shortfalls) by deployment, oldest first.
CREATE INDEX events_deploy_at ON events (deploy_id, at_us);
