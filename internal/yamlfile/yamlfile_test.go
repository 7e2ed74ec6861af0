package yamlfile

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// yaml.v3's own line numbers are off for several errors; the reported
// position is the one a person has to fix.
func TestParse_SyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"mapping in a plain scalar on line 1", "a: b: c\n", "f.yaml:1:5: invalid YAML: mapping values are not allowed in this context"},
		{"mis-indented key", "sensitive:\n  - a\n b: c\n", "f.yaml:3:2: invalid YAML: did not find expected key"},
		{"mapping after a list", "- a\nb: c\n", "f.yaml:2:2: invalid YAML: did not find expected '-' indicator"},
		{"unknown alias", "a: &x 1\nb: *y\n", "f.yaml:2:5: invalid YAML: unknown anchor 'y' referenced"},
		{"unclosed quote", "a: 1\nb: \"x\ny\"\nc: 'z\n", "f.yaml:4:4: invalid YAML: found unexpected end of stream (an unclosed quote or bracket?)"},
		{"unclosed bracket", "a: [1, 2\nb: 3\n", "f.yaml:1:5: invalid YAML: did not find expected ',' or ']'"},
		{"tab indentation", "a: b\n\tc: d\n", "f.yaml:2:1: invalid YAML: found a tab character that violates indentation"},
		{"CR line breaks", "a: 1\rb: c: d\r", "f.yaml:2:5: invalid YAML: mapping values are not allowed in this context"},
		{"error in a later document", "a: 1\n...\nb: c: d\n", "f.yaml:3:1: invalid YAML: did not find expected <document start>"},
		{"invalid UTF-8", "a: x\xffy\n", "f.yaml:1:5: the file is not valid UTF-8; save it as UTF-8"},
		{"control character after a multi-byte one", "a: é\x07\n", "f.yaml:1:5: character U+0007 is not allowed in YAML"},
		{"control character after an LS break", "a: 1\u2028b: \x01", "f.yaml:2:4: character U+0001 is not allowed in YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, errs := Parse("f.yaml", []byte(tt.yaml), "test file")
			if root != nil || errs.Error() != tt.want {
				t.Errorf("got root %v, errors:\n%v\nwant no root and %s", root != nil, errs, tt.want)
			}
		})
	}
}

func TestParse_Documents(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		wantRoot bool
		wantErr  string
	}{
		{"empty", "", false, ""},
		{"comments only", "# nothing\n", false, ""},
		{"document start alone", "---\n", false, ""},
		{"null", "~\n", false, ""},
		{"one document", "a: 1\n", true, ""},
		{"UTF-8 BOM", "\ufeffa: 1\n", true, ""},
		{"an empty second document", "a: 1\n---\n", true, ""},
		// The first document is still decoded, so that its problems are
		// reported along with this one.
		{"a second document", "a: 1\n---\nb: 2\n", true, "f.yaml:2:1: a second YAML document starts here; a test file holds one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, errs := Parse("f.yaml", []byte(tt.yaml), "test file")
			if (root != nil) != tt.wantRoot || errs.Error() != tt.wantErr {
				t.Errorf("got root %v, errors %q; want root %v, errors %q", root != nil, errs, tt.wantRoot, tt.wantErr)
			}
		})
	}
}

// A few aliases repeated many times ("billion laughs") are refused before
// anything is decoded, quickly, at the alias that goes too far.
func TestParse_AliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ { // 10^10 values once expanded
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	start := time.Now()
	root, errs := Parse("f.yaml", []byte(b.String()), "test file")
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Parse took %s", elapsed)
	}
	// Lines 1 to 4 hold 12,345 values; each alias on line 5 adds 11,111:
	// the eighth passes the bound.
	want := "f.yaml:5:45: more than 100000 values once aliases are expanded; a test file needs far fewer"
	if root != nil || errs.Error() != want {
		t.Errorf("got root %v, errors %v; want %s", root != nil, errs, want)
	}

	// Aliases within the bound are fine.
	if root, errs := Parse("f.yaml", []byte("a: &a [x, y]\nb: [*a, *a, *a]\n"), "test file"); root == nil || errs != nil {
		t.Errorf("got root %v, errors %v; want a root", root != nil, errs)
	}
}

func TestLines(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"a\nb", []string{"a", "b"}},
		{"a\r\nb\n", []string{"a", "b"}},
		{"a\rb\u2028c\u0085", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		if got := Lines([]byte(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("Lines(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// decode parses src and runs f on its top-level node, returning the
// messages of the errors.
func decode(t *testing.T, src string, f func(d *Decoder, root *yaml.Node)) []string {
	t.Helper()
	root, errs := Parse("f.yaml", []byte(src), "test file")
	if errs != nil {
		t.Fatalf("Parse: %v", errs)
	}
	d := &Decoder{File: "f.yaml"}
	f(d, root)
	var msgs []string
	for _, e := range d.Errs {
		msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Msg))
	}
	return msgs
}

func TestDecoder_Mapping(t *testing.T) {
	var got Entries
	errs := decode(t, "a: 1\nb:\nc: &c x\nzz: 2\na: 3\n<<: {d: 4}\n[x]: 5\nd: *c\n", func(d *Decoder, root *yaml.Node) {
		got, _ = d.Mapping(root, "top", "a", "b", "c", "d")
	})
	want := []string{
		`4:1: top: unknown key "zz" (known: a, b, c, d)`,
		`5:1: top: duplicate key "a" (first at 1:1)`,
		`6:1: top: merge keys (<<) are not supported; write the keys out`,
		`7:1: top: keys must be names, got a list`,
	}
	if !slices.Equal(errs, want) {
		t.Errorf("errors:\n got %q\nwant %q", errs, want)
	}
	var keys []string
	for _, e := range got {
		keys = append(keys, e.Key.Value)
	}
	if !slices.Equal(keys, []string{"a", "b", "c", "d"}) {
		t.Errorf("keys: got %q, want a, b, c, d in file order", keys)
	}
	if got.Value("a").Value != "1" || got.Value("b") != nil || got.Value("d").Value != "x" || got.Value("nope") != nil {
		t.Errorf("values: a=%v b=%v d=%v; want 1, nil (null), x (the alias resolved)", got.Value("a"), got.Value("b"), got.Value("d"))
	}

	errs = decode(t, "[1]\n", func(d *Decoder, root *yaml.Node) {
		if _, ok := d.Mapping(root, "top", "a", "b"); ok {
			t.Error("a list decoded as a mapping")
		}
	})
	if want := []string{"1:1: top: want a mapping (a, b), got a list"}; !slices.Equal(errs, want) {
		t.Errorf("errors:\n got %q\nwant %q", errs, want)
	}
}

func TestDecoder_Scalars(t *testing.T) {
	str := func(d *Decoder, n *yaml.Node) any { v, _ := d.String(n, "v"); return v }
	boolean := func(d *Decoder, n *yaml.Node) any { v, _ := d.Bool(n, "v"); return v }
	integer := func(d *Decoder, n *yaml.Node) any { v, _ := d.Int(n, "v"); return v }
	number := func(d *Decoder, n *yaml.Node) any { v, _ := d.Number(n, "v"); return v }
	goDur := func(d *Decoder, n *yaml.Node) any { v, _ := d.Duration(n, "v"); return v }
	promDur := func(d *Decoder, n *yaml.Node) any { v, _ := d.PromDuration(n, "v"); return v }
	strs := func(d *Decoder, n *yaml.Node) any { v, _ := d.Strings(n, "v"); return strings.Join(v, ",") }
	strMap := func(d *Decoder, n *yaml.Node) any { v, _ := d.StringMap(n, "v"); return fmt.Sprint(v) }
	tests := []struct {
		name    string
		value   string
		decode  func(*Decoder, *yaml.Node) any
		want    any
		wantErr string // line:col: message
	}{
		{"string", "abc", str, "abc", ""},
		{"number as a string", "9473", str, "9473", ""},
		{"null string", "~", str, "", `1:4: v: want a string, got null`},
		{"list as a string", "[a]", str, "", `1:4: v: want a string, got a list`},
		{"true", "true", boolean, true, ""},
		{"yes", "yes", boolean, false, `1:4: v: want true or false, got "yes"`},
		{"quoted true", `"true"`, boolean, false, `1:4: v: want true or false, got the quoted string "true"`},
		{"integer", "1_000", integer, int64(1000), ""},
		{"leading zero is decimal", "0100", integer, int64(100), ""},
		{"hexadecimal", "0x10", integer, int64(0), `1:4: v: want a decimal integer, got "0x10"`},
		{"too large", "9223372036854775808", integer, int64(0), `1:4: v: want an integer up to 9223372036854775807, got "9223372036854775808"`},
		{"far too large", "99999999999999999999", integer, int64(0), `1:4: v: want an integer up to 9223372036854775807, got "99999999999999999999"`},
		{"too small", "-9223372036854775809", integer, int64(0), `1:4: v: want an integer down to -9223372036854775808, got "-9223372036854775809"`},
		{"fraction", "1.5", integer, int64(0), `1:4: v: want an integer, got "1.5"`},
		{"number", "2.5", number, 2.5, ""},
		{"infinite number", ".inf", number, 0.0, `1:4: v: want a number, got ".inf"`},
		{"Go duration", "1h30m", goDur, 90 * time.Minute, ""},
		{"negative Go duration", "-1s", goDur, -time.Second, ""},
		{"day in a Go duration", "7d", goDur, time.Duration(0), `1:4: v: "7d" is not a duration (e.g. "1s"); there is no day unit: write "24h"`},
		{"mapping as a Go duration", "{m: 5}", goDur, time.Duration(0), `1:4: v: want a duration (e.g. "1s"), got a mapping`},
		{"Prometheus duration", "1d12h", promDur, 36 * time.Hour, ""},
		{"negative Prometheus duration", "-1m", promDur, time.Duration(0), `1:4: v: "-1m" is negative`},
		{"bad Prometheus duration", "10x", promDur, time.Duration(0), `1:4: v: "10x" is not a duration (e.g. "90s", "10m", "1h30m", "1d")`},
		{"list of strings", "[a, b]", strs, "a,b", ""},
		{"list with a list", "[a, [b]]", strs, "a", `1:8: v[1]: want a string, got a list`},
		{"string map", "{a: x, b: ~}", strMap, "map[a:x]", ""},
		{"string map with a list", "{a: [x]}", strMap, "map[a:]", `1:8: v.a: want a string, got a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got any
			errs := decode(t, "v: "+tt.value+"\n", func(d *Decoder, root *yaml.Node) {
				got = tt.decode(d, root.Content[1])
			})
			var wantErrs []string
			if tt.wantErr != "" {
				wantErrs = []string{tt.wantErr}
			}
			if got != tt.want || !slices.Equal(errs, wantErrs) {
				t.Errorf("got %#v, errors %q; want %#v, errors %q", got, errs, tt.want, wantErrs)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{Error{Pos: Pos{File: "f.yaml", Line: 3, Column: 7}, Msg: "m"}, "f.yaml:3:7: m"},
		{Error{Pos: Pos{File: "f.yaml", Line: 3}, Msg: "m"}, "f.yaml:3: m"},
		{Error{Pos: Pos{File: "f.yaml"}, Msg: "m"}, "f.yaml: m"},
		{Errors{{Pos: Pos{File: "f", Line: 1, Column: 1}, Msg: "a"}, {Pos: Pos{File: "f", Line: 2, Column: 1}, Msg: "b"}}, "f:1:1: a\nf:2:1: b"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}

	es := Errors{
		{Pos: Pos{File: "b", Line: 2, Column: 1}, Msg: "b2"},
		{Pos: Pos{File: "a", Line: 9, Column: 1}, Msg: "a9"},
		{Pos: Pos{File: "b", Line: 1, Column: 5}, Msg: "b1.5 first"},
		{Pos: Pos{File: "b"}, Msg: "b0"},
		{Pos: Pos{File: "a", Line: 1, Column: 1}, Msg: "a1"},
		{Pos: Pos{File: "b", Line: 1, Column: 5}, Msg: "b1.5 second"},
	}
	es.Sort()
	var got []string
	for _, e := range es {
		got = append(got, e.Msg)
	}
	if want := []string{"b0", "b1.5 first", "b1.5 second", "b2", "a1", "a9"}; !slices.Equal(got, want) {
		t.Errorf("sorted: got %q, want %q (each file's in position order, files in order of appearance)", got, want)
	}

	var one Error
	if !errors.As(error(es), &one) || one.Msg != "b0" {
		t.Errorf("errors.As(Errors, *Error) = %v, want the first", one)
	}
	if Errors(nil).Err() != nil {
		t.Error("Errors(nil).Err() is not nil")
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://am:9093/x", "http://am:9093/x"},
		{"http://u:p@am:9093", "http://u:xxxxx@am:9093"},
		{"https://u@am", "https://u@am"},
		{"http://u:p/q@am", "http://xxxxx"},
		{"https://h/x?token=abc&y=1", "https://h/x?token=xxxxx"},
		{"https://h.example secret:abc def", "https://h.example secret:xxxxx"},
		{"password:abc", "password:xxxxx"},
		{"Bearer_Token = abc", "Bearer_Token =xxxxx"},
		{"secret_file: /x", "secret_file: /x"},
		{"host=db password=abc port=1", "host=db password=xxxxx"},
		{"plain", "plain"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Every value a message quotes is redacted, in every kind of file: a DSN
// pasted as a rule's name is as secret as one in the config file.
func TestQuoteRedactsAndShortens(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://app:S3cret@db/app": `"postgres://app:xxxxx@db/app"`,
		strings.Repeat("a", 50):        `"` + strings.Repeat("a", 40) + `…"`,
		`say "hi"`:                     `"say \"hi\""`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	errs := decode(t, "v: 'host=db password=S3cret'\n", func(d *Decoder, root *yaml.Node) {
		d.Int(root.Content[1], "v")
	})
	if want := []string{`1:4: v: want an integer, got the quoted string "host=db password=xxxxx"`}; !slices.Equal(errs, want) {
		t.Errorf("got %q, want %q", errs, want)
	}
}
