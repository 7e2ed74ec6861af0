-- The schema the classification corpus (corpus.yaml) runs against, loaded
-- into a throwaway PostgreSQL by TestCorpus. Sensitive (corpus_test.go):
-- public.users (email, username, password_hash), auth.accounts (login, pw).
CREATE EXTENSION hstore;
CREATE EXTENSION dblink;

CREATE TABLE public.users (
	id bigint PRIMARY KEY,
	email text UNIQUE,
	username text,
	password_hash text,
	email_verified boolean,
	password_updated_at timestamptz,
	created_at timestamptz,
	reset_token text
);
-- Usernames are unique regardless of case; reset tokens are unique; a
-- partial unique index exempts rows and is not a key.
CREATE UNIQUE INDEX users_username_lower ON public.users (lower(username));
CREATE UNIQUE INDEX users_reset_token ON public.users (reset_token);
CREATE UNIQUE INDEX users_verified_username ON public.users (username) WHERE email_verified;
CREATE INDEX users_created_at ON public.users (created_at);
-- An inheritance child: its rows are users' rows too. Its keys repeat the
-- parent's, so that they hold across both.
CREATE TABLE public.admins (level int) INHERITS (public.users);
ALTER TABLE public.admins ADD PRIMARY KEY (id), ADD UNIQUE (email), ADD UNIQUE (reset_token);
CREATE UNIQUE INDEX admins_username_lower ON public.admins (lower(username));
CREATE TABLE public.orders (id bigint PRIMARY KEY, user_id bigint, total numeric, note text);
CREATE TABLE public.order_lines (order_id bigint, quantity int, unit_price numeric);
-- A column named email in a table nobody configured as sensitive.
CREATE TABLE public.newsletter (id int, email text);
CREATE TABLE public.audit_log (id int, sql_text text);
CREATE TABLE public.backup (email text, note text);

CREATE SCHEMA auth;
CREATE TABLE auth.accounts (id bigint, login text, pw text, region text,
	PRIMARY KEY (id, region), UNIQUE (login, region)) PARTITION BY LIST (region);
CREATE TABLE auth.accounts_eu PARTITION OF auth.accounts FOR VALUES IN ('eu');
CREATE TABLE auth.accounts_us PARTITION OF auth.accounts FOR VALUES IN ('us');

CREATE VIEW public.user_emails AS SELECT id, email FROM users WHERE created_at > '2020-01-01';
CREATE VIEW public.verified_users AS SELECT id, email_verified, password_updated_at FROM users;
CREATE MATERIALIZED VIEW public.login_cache AS SELECT id, username, password_hash AS hash FROM users;

-- SQL functions.
CREATE FUNCTION public.get_users() RETURNS SETOF users LANGUAGE sql STABLE AS 'SELECT * FROM users';
CREATE FUNCTION public.user_email(uid bigint) RETURNS text LANGUAGE sql
	AS $$SELECT email FROM users WHERE id = uid$$;
CREATE FUNCTION public.user_exists(p_email text) RETURNS boolean LANGUAGE sql
	AS $$SELECT exists(SELECT 1 FROM users WHERE email = p_email)$$;
CREATE FUNCTION public.count_users() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM users';
CREATE FUNCTION public.logins(min_id bigint) RETURNS TABLE (uid bigint, login text) LANGUAGE sql
	AS $$SELECT id, username FROM users WHERE id >= $1$$;
CREATE FUNCTION public.shout(t text) RETURNS text LANGUAGE sql IMMUTABLE RETURN upper(t);
CREATE FUNCTION public.hash_of(uid bigint) RETURNS text LANGUAGE sql
BEGIN ATOMIC
	SELECT password_hash FROM users WHERE id = uid;
END;
CREATE FUNCTION public.fact(n int) RETURNS int LANGUAGE sql
	AS 'SELECT CASE WHEN n <= 1 THEN 1 ELSE n * fact(n - 1) END';
CREATE FUNCTION public.archive_emails() RETURNS void LANGUAGE sql
	AS 'INSERT INTO backup (email) SELECT email FROM users';

-- PL/pgSQL functions.
CREATE FUNCTION public.find_users(p_name text) RETURNS SETOF users LANGUAGE plpgsql
	AS $$BEGIN RETURN QUERY SELECT * FROM users WHERE username = p_name; END$$;
CREATE FUNCTION public.dyn_users(col text) RETURNS SETOF text LANGUAGE plpgsql
	AS $$BEGIN RETURN QUERY EXECUTE format('SELECT %I FROM users', col); END$$;
CREATE FUNCTION public.touch_login(uid bigint) RETURNS void LANGUAGE plpgsql
	AS $$BEGIN UPDATE users SET created_at = now() WHERE id = uid; END$$;
CREATE FUNCTION public.secret_lookup(uid bigint) RETURNS text LANGUAGE plpgsql SECURITY DEFINER
	AS $$DECLARE h text; BEGIN SELECT password_hash INTO h FROM users WHERE id = uid; RETURN h; END$$;
CREATE FUNCTION public.order_total(oid bigint) RETURNS numeric LANGUAGE plpgsql
	AS $$DECLARE t numeric; BEGIN SELECT total INTO t FROM orders WHERE id = oid; RETURN t; END$$;
CREATE FUNCTION public.is_admin(uid bigint) RETURNS boolean LANGUAGE plpgsql
	AS $$BEGIN RETURN EXISTS (SELECT 1 FROM admins WHERE id = uid); END$$;
CREATE FUNCTION public.user_by_login(p_login text) RETURNS SETOF auth.accounts LANGUAGE plpgsql
	AS $$BEGIN
		IF p_login IS NULL THEN
			RAISE EXCEPTION 'login required';
		END IF;
		RETURN QUERY SELECT * FROM auth.accounts WHERE login = p_login;
	END$$;
-- Unanalysable PL/pgSQL (loops, assignments, SELECT INTO, EXECUTE): the call
-- is incomplete only when the body could read sensitive data.
CREATE FUNCTION public.order_lines_total(p_order bigint) RETURNS numeric LANGUAGE plpgsql STABLE
	AS $$DECLARE
		s numeric := 0;
		l record;
	BEGIN
		FOR l IN SELECT quantity, unit_price FROM order_lines WHERE order_id = p_order LOOP
			s := s + l.quantity * l.unit_price;
		END LOOP;
		RETURN s;
	END$$;
CREATE FUNCTION public.email_for(uid bigint) RETURNS text LANGUAGE plpgsql
	AS $$DECLARE e text; BEGIN SELECT email INTO e FROM users WHERE id = uid; RETURN e; END$$;
CREATE FUNCTION public.greeting(uid bigint) RETURNS text LANGUAGE plpgsql
	AS $$DECLARE e text; BEGIN e := email_for(uid); RETURN 'Hello ' || e; END$$;
CREATE FUNCTION public.row_count(tbl text) RETURNS bigint LANGUAGE plpgsql
	AS $$DECLARE n bigint; BEGIN EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n; RETURN n; END$$;
