-- Who ran each run, and what it wrote to: the audit trail of who touched the backups.
-- user: 'login (uid N)', with ', via sudo from NAME' when run through sudo; target: a restore's
-- folder or its database url with the password removed, a drill's staging folder.
ALTER TABLE runs ADD COLUMN user TEXT;
ALTER TABLE runs ADD COLUMN target TEXT;
CREATE INDEX runs_by_start ON runs (started);
