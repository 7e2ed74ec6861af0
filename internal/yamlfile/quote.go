package yamlfile

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// redactedMask replaces a password or secret in what Quote and RedactDSN
// return, as pgx does in its errors.
const redactedMask = "xxxxx"

// Quote quotes a value from a file for a message, shortened so that a
// pasted blob does not flood the terminal. Whatever the file, a value that
// may hold a secret is redacted first (see Redact): a DSN pasted in the
// wrong place (database: postgres://… instead of database: {dsn: …}) must
// not print its password, nor a URL its user info, nor a "secret:…"
// missing the space after its colon (which YAML reads as part of a plain
// scalar) its secret.
func Quote(s string) string {
	s = Redact(s)
	const maxRunes = 40
	if utf8.RuneCountInString(s) > maxRunes {
		s = string([]rune(s)[:maxRunes]) + "…"
	}
	return strconv.Quote(s)
}

// urlScheme matches the scheme of a URL of any kind.
var urlScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://`)

// secretSetting matches a setting whose value is secret (password=,
// sslpassword=, secret:, bearer_token:, ...) up to the end of the string,
// since where the value ends is anyone's guess.
var secretSetting = regexp.MustCompile(`(?is)((?:password|secret|token)\s*[:=]).*$`)

// passwordSetting matches the password of a keyword/value connection string.
var passwordSetting = regexp.MustCompile(`(?i)\bpassword\s*=`)

// Redact hides the password of a URL (user info and password= query
// parameters) or of a keyword/value connection string, and anything
// following a secret's key (password=, secret:, token: ...), in a value
// from a file.
func Redact(s string) string {
	if scheme := urlScheme.FindString(s); scheme != "" {
		s = scheme + redactURLRest(s[len(scheme):])
	} else if strings.Contains(s, "://") || passwordSetting.MatchString(s) {
		s = RedactDSN(s)
	}
	return secretSetting.ReplaceAllString(s, "${1}"+redactedMask)
}

// RedactDSN returns a PostgreSQL connection string with every password
// replaced by xxxxx: the password of a URL's user info, password=
// and sslpassword= query parameters, and password= and sslpassword= in the
// keyword/value form (keys matched case-insensitively). When the string is
// too malformed to tell where a password could be, everything but the URL
// scheme is hidden. An empty string gives "".
func RedactDSN(dsn string) string {
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

// redactURLRest redacts a URL after its scheme. It splits the URL the way
// pgx and libpq do: the user info ends at the first '@' met before any '/'.
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
