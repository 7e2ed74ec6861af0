// Package redact removes the values from SQL texts before they leave the detector: a
// statement shown to on-call keeps its shape (keywords, names, operators, parameters) and
// loses every literal and every comment.
//
// It works on PostgreSQL's own lexer (pg_query.Scan), not on the parse tree, so that it
// redacts every statement kind alike: pg_query.Normalize leaves the literals of utility
// statements (ALTER ROLE … PASSWORD '…', DO bodies, PREPARE, DECLARE, COPY, CALL, SET) in
// place. A text it cannot lex with certainty is not shown at all.
//
// It is not for classification (see detector/classify) and does not hide names:
// identifiers, even quoted ones, are kept.
package redact

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Statement returns sql with every constant replaced by a $n placeholder (numbered after
// the highest parameter already in the text, as pg_stat_statements numbers its own),
// comments removed and runs of white space folded into one space (a space is also put
// between a placeholder and a neighbouring name or number).
//
// Constants are the lexer's string, number, bit-string and hex-string tokens, which
// include E'…', U&'…' and dollar-quoted strings: a DO block or a function body is
// therefore one placeholder. When the text cannot be lexed (truncated inside a literal or
// a comment, as pg_stat_activity truncates at track_activity_query_size; a NUL byte;
// anything the lexer leaves unexplained) or its literals' extent depends on
// standard_conforming_strings, the result is Unavailable(len(sql)). The result never
// contains a byte of a constant or a comment of sql.
func Statement(sql string) string {
	if strings.IndexByte(sql, 0) >= 0 {
		// The C lexer stops at a NUL: what follows would be neither shown nor checked.
		return Unavailable(len(sql))
	}
	scan, err := pg_query.Scan(sql)
	if err != nil {
		return Unavailable(len(sql))
	}
	tokens := scan.GetTokens()

	next := 1
	for _, tk := range tokens {
		if tk.Token == pg_query.Token_PARAM {
			if n, err := strconv.Atoi(sql[tk.Start+1 : tk.End]); err == nil && n >= next {
				next = n + 1
			}
		}
	}

	var b strings.Builder
	b.Grow(len(sql))
	pos := 0
	space := false // a separator is owed before the next token
	for _, tk := range tokens {
		start, end := int(tk.Start), int(tk.End)
		if start < pos || end < start || end > len(sql) || !blank(sql[pos:start]) {
			return Unavailable(len(sql))
		}
		if start > pos {
			space = true
		}
		pos = end
		text := sql[start:end]
		switch tk.Token {
		case pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			space = true
			continue
		case pg_query.Token_SCONST:
			if ambiguousString(text) {
				return Unavailable(len(sql))
			}
			text = "$" + strconv.Itoa(next)
			next++
		case pg_query.Token_USCONST, pg_query.Token_BCONST, pg_query.Token_XCONST,
			pg_query.Token_ICONST, pg_query.Token_FCONST:
			text = "$" + strconv.Itoa(next)
			next++
		}
		// A placeholder must not glue to its neighbour: N'x' is not the name N$1.
		if b.Len() > 0 && (space || word(out(&b)) && word(text[0])) {
			b.WriteByte(' ')
		}
		space = false
		b.WriteString(text)
	}
	if !blank(sql[pos:]) {
		return Unavailable(len(sql))
	}
	return b.String()
}

// Unavailable is what Statement returns for a text it cannot redact with certainty: its
// length only.
func Unavailable(n int) string {
	return "<statement not shown: " + strconv.Itoa(n) + " bytes>"
}

// out returns the last byte written to b.
func out(b *strings.Builder) byte {
	s := b.String()
	return s[len(s)-1]
}

// word reports whether c may continue a name, a number or a parameter.
func word(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// blank reports whether s is only the white space the lexer skips between tokens.
func blank(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\f', '\v':
		default:
			return false
		}
	}
	return true
}

// ambiguousString reports whether a plain '…' string token contains a backslash before
// a quote. The lexer reads it with standard_conforming_strings on, where \ is an ordinary
// character; a session that turned the setting off means \' as an escaped quote, so its
// literal would extend past the token and the rest of it would be shown as names.
func ambiguousString(tok string) bool {
	if tok == "" || tok[0] != '\'' {
		return false // E'…' (escapes understood by the lexer) or dollar-quoted
	}
	return strings.Contains(tok, `\'`)
}
