-- A run's own report, as JSON, for runs that have more to tell than the columns hold: a
-- restore drill's recovery time, recovery point, stage timings and checks.
ALTER TABLE runs ADD COLUMN report TEXT;
