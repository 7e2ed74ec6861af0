package config

import (
	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/internal/yamlfile"
)

// dsnUnparsable is the whole message for a DSN that pgx cannot parse. pgx's
// own error quotes the connection string with a best-effort redaction that its
// documentation says can miss a password in malformed input, and the inner
// error can quote fragments of it, so neither is shown.
const dsnUnparsable = "not a valid PostgreSQL connection string (a postgres:// URL or " +
	"keyword=value pairs; a service it names and the PG* environment variables count too); " +
	"the value is not shown because it may contain a password"

// dsnParses reports whether pgx can build a connection config from dsn. Like
// libpq, pgx merges the PG* variables of the process environment and reads a
// service file the DSN names, so those can make it fail too. It is pgx's
// ParseConfig, not pgconn's, because that is what the detector connects with
// (it also reads pgx's own keys, such as statement_cache_capacity), and what
// Watches derives instance and database names with.
func dsnParses(dsn string) bool {
	_, err := pgx.ParseConfig(dsn)
	return err == nil
}

// RedactedDSN returns the DSN with every password replaced by xxxxx, for logs
// and diagnostics: the password of a URL's user info, password= and
// sslpassword= query parameters, and password= and sslpassword= in the
// keyword/value form (keys matched case-insensitively). When the DSN is too
// malformed to tell where a password could be, everything but the URL scheme
// is hidden. An empty DSN (connect with PG* variables) gives "", and so does
// a configuration with targets, whose DSNs are its servers': see
// WatchedServer.RedactedDSN.
func (c *Config) RedactedDSN() string {
	return yamlfile.RedactDSN(c.Database.DSN)
}
