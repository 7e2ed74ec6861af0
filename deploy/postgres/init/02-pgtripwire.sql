-- The detector's role: it reads statistics views, never the tables themselves.
-- pg_monitor includes pg_read_all_stats, which shows every role's statements and texts.
CREATE ROLE pgtripwire LOGIN PASSWORD 'pgtripwire';
GRANT pg_monitor TO pgtripwire;
