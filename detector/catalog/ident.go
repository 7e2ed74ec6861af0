package catalog

import (
	"errors"
	"fmt"
	"strings"
)

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
