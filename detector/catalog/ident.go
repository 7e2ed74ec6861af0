package catalog

import (
	"errors"
	"fmt"
	"strings"
)

// QuoteIdent quotes an identifier the way PostgreSQL's quote_ident does: only
// when it is not a plain lower-case identifier or is a keyword that cannot be
// used as a bare name.
func QuoteIdent(s string) string {
	if isPlainIdent(s) && !reservedKeywords[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func isPlainIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case i > 0 && c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return true
}

// ParseQualifiedName splits a possibly quoted "schema.name" the way PostgreSQL
// reads it in SQL (and in regclass input): unquoted parts are folded to lower
// case, quoted parts are kept as written with "" unescaped. It is for names
// coming from configuration; SQL text goes through the classifier's parser.
func ParseQualifiedName(s string) (schema, name string, err error) {
	parts, err := splitIdentifiers(s)
	if err != nil {
		return "", "", err
	}
	if len(parts) != 2 {
		return "", "", fmt.Errorf("%q: want a schema-qualified name (schema.table)", s)
	}
	return parts[0], parts[1], nil
}

// ParseIdentifier reads a single, possibly quoted identifier with the same
// folding rules as ParseQualifiedName.
func ParseIdentifier(s string) (string, error) {
	parts, err := splitIdentifiers(s)
	if err != nil {
		return "", err
	}
	if len(parts) != 1 {
		return "", fmt.Errorf("%q: want a single identifier", s)
	}
	return parts[0], nil
}

var errEmptyIdent = errors.New("empty identifier")

func splitIdentifiers(s string) ([]string, error) {
	var parts []string
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		var part string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("%q: unterminated quoted identifier", s)
			}
			part = b.String()
		} else {
			start := i
			for i < len(s) && s[i] != '.' && !isSpace(s[i]) && s[i] != '"' {
				i++
			}
			part = foldIdent(s[start:i])
		}
		if part == "" {
			return nil, fmt.Errorf("%q: %w", s, errEmptyIdent)
		}
		parts = append(parts, part)
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("%q: unexpected character at offset %d", s, i)
		}
		i++
	}
}

// foldIdent lower-cases ASCII letters only, as PostgreSQL's downcase_identifier
// does for multi-byte encodings.
func foldIdent(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// ParseSearchPath splits a search_path setting as SHOW search_path prints it
// (`"$user", public`) into schema names, with the same quoting rules as
// PostgreSQL. "$user" is kept as is for Resolve to substitute. Malformed entries are skipped, as PostgreSQL skips schemas that
// do not exist.
func ParseSearchPath(s string) []string {
	var path []string
	for _, item := range splitTopLevelCommas(s) {
		if strings.TrimSpace(item) == "" {
			continue
		}
		name, err := ParseIdentifier(item)
		if err != nil {
			continue
		}
		path = append(path, name)
	}
	return path
}

func splitTopLevelCommas(s string) []string {
	var items []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				items = append(items, s[start:i])
				start = i + 1
			}
		}
	}
	return append(items, s[start:])
}

// reservedKeywords are the PostgreSQL 17 keywords that quote_ident quotes: all
// but the unreserved ones (src/include/parser/kwlist.h).
var reservedKeywords = func() map[string]bool {
	m := make(map[string]bool)
	for _, k := range strings.Fields(`all analyse analyze and any array as asc asymmetric
		authorization between bigint binary bit boolean both case cast char character check
		coalesce collate collation column concurrently constraint create cross current_catalog
		current_date current_role current_schema current_time current_timestamp current_user
		dec decimal default deferrable desc distinct do else end except exists extract false
		fetch float for foreign freeze from full grant greatest group grouping having ilike in
		initially inner inout int integer intersect interval into is isnull join json
		json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar
		json_serialize json_table json_value lateral leading least left like limit localtime
		localtimestamp merge_action national natural nchar none normalize not notnull null
		nullif numeric offset on only or order out outer overlaps overlay placing position
		precision primary real references returning right row select session_user setof
		similar smallint some substring symmetric system_user table tablesample then time
		timestamp to trailing treat trim true union unique user using values varchar variadic
		verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest
		xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable`) {
		m[k] = true
	}
	return m
}()
