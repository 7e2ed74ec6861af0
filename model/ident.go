package model

import "strings"

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

// QualifiedName returns schema.name with each part quoted only where PostgreSQL's
// quote_ident would quote it (public.users stays plain, public."user" does not): the
// canonical name of a relation in events, alerts and configuration..
func QualifiedName(schema, name string) string {
	return QuoteIdent(schema) + "." + QuoteIdent(name)
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
