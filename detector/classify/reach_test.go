package classify

import (
	"slices"
	"testing"
)

func TestScanText(t *testing.T) {
	tests := []struct {
		name        string
		text        string
		names       []string
		dynamic     string
		unscannable bool
	}{
		{"identifiers fold, quoted ones do not", `SELECT Total INTO t FROM Orders, "Users"`,
			[]string{"select", "total", "into", "t", "from", "orders", "Users"}, "", false},
		{"literals and comments are not names", "BEGIN m := 'users'; -- users\n/* users */ RETURN $q$users$q$; END",
			[]string{"begin", "m", "return", "end"}, "", false},
		{"reserved keyword after a dot", "SELECT 1 FROM public.order",
			[]string{"select", "from", "public", "order"}, "", false},
		{"EXECUTE", "BEGIN RETURN QUERY EXECUTE format('SELECT 1'); END",
			[]string{"begin", "return", "query", "format", "end"}, "EXECUTE", false},
		{"dblink", "SELECT x FROM dblink('c', q) AS t(x text)",
			[]string{"select", "x", "from", "dblink", "q", "as", "t", "text"}, "dblink", false},
		{"unterminated literal", "BEGIN RETURN 'users; END", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scanText(tt.text)
			if !slices.Equal(got.names, tt.names) || got.dynamic != tt.dynamic || got.unscannable != tt.unscannable {
				t.Errorf("got names %q, dynamic %q, unscannable %v; want %q, %q, %v",
					got.names, got.dynamic, got.unscannable, tt.names, tt.dynamic, tt.unscannable)
			}
		})
	}
}
