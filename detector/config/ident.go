package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pgtripwire/pgtripwire/model"
)

// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1: longer names are truncated
// by the server, so a longer name in the config could never match.
const maxIdentifierLen = 63

// NewSensitiveTable checks and normalizes a sensitive table the way Load does
// (see SensitiveTable), for callers that build a Config by hand.
func NewSensitiveTable(table string, columns ...string) (SensitiveTable, error) {
	schema, name, err := parseTableName(table)
	if err != nil {
		return SensitiveTable{}, fmt.Errorf("sensitive table: %w", err)
	}
	t := SensitiveTable{Table: qualifiedName(schema, name), Schema: schema, Name: name}
	if len(columns) == 0 {
		return SensitiveTable{}, fmt.Errorf("sensitive table %s: no columns", t.Table)
	}
	seen := make(map[string]bool, len(columns))
	for _, c := range columns {
		col, err := parseIdentifier(c)
		if err != nil {
			return SensitiveTable{}, fmt.Errorf("sensitive table %s: column %w", t.Table, err)
		}
		if seen[col] {
			return SensitiveTable{}, fmt.Errorf("sensitive table %s: column %s listed twice", t.Table, quoteIdentifier(col))
		}
		seen[col] = true
		t.Columns = append(t.Columns, col)
	}
	return t, nil
}

// parseTableName parses a schema-qualified table name written as in SQL.
func parseTableName(s string) (schema, name string, err error) {
	parts, err := parseName(s)
	if err != nil {
		return "", "", fmt.Errorf("cannot use %s: %w", quote(s), err)
	}
	switch len(parts) {
	case 1:
		return "", "", fmt.Errorf("%s is not schema-qualified; write schema.table, e.g. public.%s", quote(s), quoteIdentifier(parts[0]))
	case 2:
		return parts[0], parts[1], nil
	default:
		return "", "", fmt.Errorf("%s has %d parts; want schema.table", quote(s), len(parts))
	}
}

// parseIdentifier parses one identifier (a column or schema name) written as
// in SQL.
func parseIdentifier(s string) (string, error) {
	parts, err := parseName(s)
	if err != nil {
		return "", fmt.Errorf("cannot use %s: %w", quote(s), err)
	}
	if len(parts) != 1 {
		return "", fmt.Errorf("%s is not a single name; double-quote a name that contains a dot", quote(s))
	}
	return parts[0], nil
}

// parseName splits a possibly qualified SQL name such as public.users or
// "My Schema"."Users" into identifiers, as PostgreSQL's lexer would: an
// unquoted identifier is folded to lower case (ASCII only, as the server does
// in UTF-8 databases), a double-quoted one is kept as written with "" standing
// for one quote. Spaces around the dots are allowed.
func parseName(s string) ([]string, error) {
	var parts []string
	i := 0
	skipSpaces := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	for {
		skipSpaces()
		if i == len(s) {
			if len(parts) == 0 {
				return nil, errors.New("empty name")
			}
			return nil, errors.New("ends with a dot")
		}
		var id string
		if s[i] == '.' {
			return nil, errors.New("empty name before a dot")
		}
		if s[i] == '"' {
			var b strings.Builder
			closed := false
			for i++; i < len(s); i++ {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i++
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
			}
			switch id = b.String(); {
			case !closed:
				return nil, errors.New("unterminated quoted identifier")
			case id == "":
				return nil, errors.New(`zero-length quoted identifier ""`)
			case strings.IndexByte(id, 0) >= 0:
				return nil, errors.New("identifier contains a NUL byte")
			}
		} else {
			start := i
			for i < len(s) && isIdentifierByte(s[i], i == start) {
				i++
			}
			if j := i; j == start || j < len(s) && s[j] != '.' && s[j] != ' ' && s[j] != '\t' {
				return nil, unquotedError(s, start, j)
			}
			id = lowerASCII(s[start:i])
		}
		if len(id) > maxIdentifierLen {
			return nil, fmt.Errorf("identifier longer than %d bytes (PostgreSQL truncates it)", maxIdentifierLen)
		}
		parts = append(parts, id)
		skipSpaces()
		if i == len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, unquotedError(s, i, i)
		}
		i++
	}
}

// unquotedError explains a character at s[bad] that cannot appear in an
// unquoted identifier starting at s[start], showing how to quote it.
func unquotedError(s string, start, bad int) error {
	r, _ := utf8.DecodeRuneInString(s[bad:])
	word := s[start:]
	if end := strings.IndexAny(word, ". \t"); end > 0 {
		word = word[:end]
	}
	return fmt.Errorf("unexpected %q; double-quote a name that contains it, and single-quote the whole value for YAML: '%s'",
		r, quoteIdentifier(word))
}

// isIdentifierByte reports whether b may appear in an unquoted identifier
// (PostgreSQL's ident_start and ident_cont; bytes of non-ASCII characters
// count as letters).
func isIdentifierByte(b byte, first bool) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b == '_', b >= 0x80:
		return true
	case b >= '0' && b <= '9', b == '$':
		return !first
	}
	return false
}

// lowerASCII folds only ASCII letters, as PostgreSQL does for unquoted
// identifiers in multi-byte encodings.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// qualifiedName is the table's canonical name: quoted exactly as the catalog snapshot,
// the classifier and PostgreSQL's regclass output quote it (keywords such as "user"
// included), so that a table named in the configuration matches the relation every
// source reports.
func qualifiedName(schema, name string) string {
	return model.QuoteIdent(schema) + "." + model.QuoteIdent(name)
}

// quoteIdentifier double-quotes id unless it reads back unchanged unquoted:
// PostgreSQL's quote_ident, except that keywords are left bare (this is a
// label for people and alerts, not SQL to execute).
func quoteIdentifier(id string) string {
	safe := id != "" && (id[0] >= 'a' && id[0] <= 'z' || id[0] == '_')
	for i := 0; safe && i < len(id); i++ {
		c := id[i]
		safe = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'
	}
	if safe {
		return id
	}
	return `"` + strings.ReplaceAll(id, `"`, `""`) + `"`
}
