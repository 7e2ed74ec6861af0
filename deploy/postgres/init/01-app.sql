-- A sample application schema for docker compose and its tests: a users table with
-- the credential columns pgtripwire watches, and the roles that read it.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

CREATE TABLE public.users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO public.users (email, username, password_hash)
SELECT 'user' || i || '@example.com', 'user' || i,
       '$2b$12$' || substr(md5(i::text) || md5((i * 7)::text), 1, 53)
FROM generate_series(1, 100000) AS i;

-- The application: one-row login lookups. The intruder: a role that should not dump.
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE ROLE mallory LOGIN PASSWORD 'mallory';
GRANT SELECT ON public.users TO app, mallory;
