package config

import (
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// redactedMask replaces a password in RedactedDSN, as pgx does in its errors.
const redactedMask = "xxxxx"

// dsnUnparsable is the whole message for a DSN that pgx cannot parse. pgx's
// own error quotes the connection string with a best-effort redaction that its
// documentation says can miss a password in malformed input, and the inner
// error can quote fragments of it, so neither is shown.
const dsnUnparsable = "not a valid PostgreSQL connection string (a postgres:// URL or " +
	"keyword=value pairs; a service it names and the PG* environment variables count too); " +
	"the value is not shown because it may contain a password"

// dsnParses reports whether pgx can build a connection config from dsn. Like
// libpq, pgx merges the PG* variables of the process environment and reads a
// service file the DSN names, so those can make it fail too.
func dsnParses(dsn string) bool {
	_, err := pgconn.ParseConfig(dsn)
	return err == nil
}

// RedactedDSN returns the DSN with every password replaced by xxxxx, for logs
// and diagnostics: the password of a URL's user info, password= and
// sslpassword= query parameters, and password= and sslpassword= in the
// keyword/value form (keys matched case-insensitively). When the DSN is too
// malformed to tell where a password could be, everything but the URL scheme
// is hidden. An empty DSN (connect with PG* variables) gives "".
func (c *Config) RedactedDSN() string {
	return redactDSN(c.Database.DSN)
}

func redactDSN(dsn string) string {
	for _, scheme := range []string{"postgresql://", "postgres://"} {
		if rest, ok := strings.CutPrefix(dsn, scheme); ok {
			return scheme + redactURLRest(rest)
		}
	}
	if dsn == "" {
		return ""
	}
	return redactKeywordValue(dsn)
}

// redactURLRest redacts a connection URL after its scheme. It splits the URL
// the way pgx and libpq do: the user info ends at the first '@' met before any
// '/'.
func redactURLRest(p string) string {
	var b strings.Builder
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		user, _, hasPassword := strings.Cut(p[:i], ":")
		b.WriteString(user)
		if hasPassword {
			b.WriteString(":" + redactedMask)
		}
		b.WriteByte('@')
		p = p[i+1:]
	}
	// In a well-formed URL no '@' follows the user info. One that does means a
	// password with an unencoded '/', '@' or '?' has spilled into the host,
	// path or query, where it cannot be told apart from them.
	if strings.Contains(p, "@") || strings.IndexByte(p, 0) >= 0 {
		return redactedMask
	}
	base, query, hasQuery := strings.Cut(p, "?")
	b.WriteString(base)
	if !hasQuery {
		return b.String()
	}
	b.WriteByte('?')
	for i, pair := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		rawKey, _, hasValue := strings.Cut(pair, "=")
		key, err := url.PathUnescape(rawKey)
		if err != nil {
			key = rawKey
		}
		if hasValue && isPasswordKey(key) {
			b.WriteString(rawKey + "=" + redactedMask)
			continue
		}
		b.WriteString(pair)
	}
	return b.String()
}

// redactKeywordValue redacts a keyword/value connection string, tokenizing it
// as pgx does (values may be single-quoted, backslash escapes a character).
func redactKeywordValue(s string) string {
	var out []string
	s = strings.TrimLeft(s, " \t\n\r\v\f")
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return redactedMask
		}
		key := strings.Trim(s[:eq], " \t\n\r\v\f")
		if key == "" || strings.ContainsAny(key, " \t\n\r\v\f") {
			return redactedMask
		}
		s = strings.TrimLeft(s[eq+1:], " \t\n\r\v\f")
		end := 0
		if s != "" && s[0] == '\'' {
			for end = 1; end < len(s) && s[end] != '\''; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			if end >= len(s) {
				return redactedMask // unterminated quote: the rest is all value
			}
			end++
		} else {
			for ; end < len(s) && !strings.ContainsRune(" \t\n\r\v\f", rune(s[end])); end++ {
				if s[end] == '\\' {
					end++
				}
			}
			end = min(end, len(s))
		}
		value := s[:end]
		if isPasswordKey(key) {
			value = redactedMask
		}
		out = append(out, key+"="+value)
		s = strings.TrimLeft(s[end:], " \t\n\r\v\f")
	}
	return strings.Join(out, " ")
}

func isPasswordKey(key string) bool {
	key = strings.TrimSpace(key)
	return strings.EqualFold(key, "password") || strings.EqualFold(key, "sslpassword")
}
