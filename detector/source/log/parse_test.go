package log

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// readFixture frames and parses a log file written by a real PostgreSQL 15.
func readFixture(t *testing.T, path, format string) []Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	frame, parse := jsonRecordEnd, func(b []byte, r *Record) error { return parseJSONLog(b, r) }
	if format == FormatCSV {
		var p csvParser
		frame, parse = csvRecordEnd, p.parse
	}
	var recs []Record
	for len(b) > 0 {
		n := frame(b)
		if n == 0 {
			t.Fatalf("%s: a partial record at the end: %q", path, b)
		}
		var r Record
		if err := parse(b[:n], &r); err != nil {
			t.Fatalf("%s: %v: %q", path, err, b[:n])
		}
		recs = append(recs, r)
		b = b[n:]
	}
	return recs
}

// The same entries, written by PostgreSQL 15 as jsonlog and as csvlog, read the same.
func TestParse_PostgreSQL15Files(t *testing.T) {
	jsonRecs := readFixture(t, "testdata/pg15.json", FormatJSON)
	csvRecs := readFixture(t, "testdata/pg15.csv", FormatCSV)
	if len(jsonRecs) != len(csvRecs) {
		t.Fatalf("got %d jsonlog records and %d csvlog ones, want the same", len(jsonRecs), len(csvRecs))
	}
	errs := func(recs []Record) []Record {
		var out []Record
		for _, r := range recs {
			if r.Severity == "ERROR" || r.Severity == "FATAL" {
				out = append(out, r)
			}
		}
		return out
	}
	want := []Record{
		{Time: time.Date(2026, 12, 7, 15, 56, 38, 279e6, time.UTC), User: "postgres", Database: "testexplore_1", PID: 15347,
			Host: "127.0.0.1", BackendType: "client backend", Severity: "ERROR", SQLState: "22P02",
			Message:   `invalid input syntax for type integer: "al"ice@x"`,
			Statement: "SELECT CAST('al\"ice@x' AS int) FROM users WHERE email = 'x\n y'"},
		{Time: time.Date(2026, 12, 7, 15, 56, 38, 279e6, time.UTC), User: "postgres", Database: "testexplore_1", PID: 15347,
			Host: "127.0.0.1", BackendType: "client backend", Severity: "ERROR", SQLState: "42601",
			Message: `syntax error at or near "SELEC"`, Statement: "SELEC 1"},
		{Time: time.Date(2026, 12, 7, 15, 56, 38, 292e6, time.UTC), User: "pw", Database: "testexplore_1", PID: 15348,
			Host: "127.0.0.1", BackendType: "client backend", Severity: "FATAL", SQLState: "28P01",
			Message: `password authentication failed for user "pw"`,
			Detail:  `Connection matched pg_hba.conf line 1: "host all pw 127.0.0.1/32 scram-sha-256"`,
			QueryID: 2424940597520090544},
	}
	for name, recs := range map[string][]Record{"jsonlog": errs(jsonRecs), "csvlog": errs(csvRecs)} {
		if len(recs) != len(want) {
			t.Fatalf("%s: got %d errors, want %d", name, len(recs), len(want))
		}
		for i := range want {
			if got := recs[i]; !got.Time.Equal(want[i].Time) || got.Time.IsZero() {
				t.Errorf("%s record %d: time %v, want %v", name, i, got.Time, want[i].Time)
			}
			got := recs[i]
			got.Time = want[i].Time
			if got != want[i] {
				t.Errorf("%s record %d:\n got %+v\nwant %+v", name, i, got, want[i])
			}
		}
	}
}

// csvlog of PostgreSQL 13 has 24 columns (no leader_pid, query_id), 12's 23; 14 to 17
// write 26. A quoted field spans lines; a row is complete only at a newline outside
// quotes.
func TestCSV_LayoutsAndFraming(t *testing.T) {
	row26 := `2024-05-01 10:00:00.123 UTC,"alice","app",42,"[local]",s,1,"SELECT",2024-05-01 10:00:00 UTC,3/1,0,ERROR,42501,"permission denied for table users",,,,,,"SELECT email
FROM users",8,,"psql","client backend",,77` + "\n"
	fields := strings.Split(strings.TrimSuffix(row26, "\n"), ",")
	row24 := strings.Join(fields[:len(fields)-2], ",") + "\n"
	row23 := strings.Join(fields[:len(fields)-3], ",") + "\n"
	for name, row := range map[string]string{"14+": row26, "13": row24, "12": row23} {
		t.Run(name, func(t *testing.T) {
			if n := csvRecordEnd([]byte(row[:len(row)-1])); n != 0 {
				t.Errorf("csvRecordEnd without the last newline = %d, want 0 (incomplete)", n)
			}
			cut := strings.Index(row, "email\n") + len("email\n")
			if n := csvRecordEnd([]byte(row[:cut])); n != 0 {
				t.Errorf("csvRecordEnd at the newline inside quotes = %d, want 0", n)
			}
			if n := csvRecordEnd([]byte(row + row)); n != len(row) {
				t.Errorf("csvRecordEnd of two rows = %d, want %d", n, len(row))
			}
			var p csvParser
			var r Record
			if err := p.parse([]byte(row), &r); err != nil {
				t.Fatal(err)
			}
			if r.User != "alice" || r.Database != "app" || r.PID != 42 || r.Host != "[local]" || r.clientAddr() != "local" ||
				r.SQLState != "42501" || r.Statement != "SELECT email\nFROM users" || r.Application != "psql" {
				t.Errorf("got %+v", r)
			}
			if wantQID := int64(77); name == "14+" && r.QueryID != wantQID {
				t.Errorf("query id %d, want %d", r.QueryID, wantQID)
			}
		})
	}
	var p csvParser
	var r Record
	for _, bad := range []string{"", "a,b,c\n", `"unterminated,` + "\n", strings.Repeat("x,", 40) + "\n"} {
		if err := p.parse([]byte(bad), &r); err == nil {
			t.Errorf("parse(%q): got no error", bad)
		}
	}
}

func TestParseLogTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"2024-05-01 10:00:00.123 UTC", time.Date(2024, 5, 1, 10, 0, 0, 123e6, time.UTC)},
		{"2024-05-01 10:00:00 GMT", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)},
		{"2024-05-01 13:00:00.000 +03", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)},
		{"2024-05-01 04:30:00.000 -0530", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)},
		{"2024-05-01 10:00:00.000 XYZT", time.Time{}}, // an abbreviation not known: no time rather than a wrong one
		{"garbage", time.Time{}},
	} {
		if got := parseLogTime(tc.in); !got.Equal(tc.want) {
			t.Errorf("parseLogTime(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestJSON_Escapes(t *testing.T) {
	var r Record
	line := `{"user":"\u00e9ve","message":"a\"b\\c\/d\n\t\ud83d\ude00","pid":7,"x":true,"y":null,"z":-1.5e3}`
	if err := parseJSONLog([]byte(line), &r); err != nil {
		t.Fatal(err)
	}
	if r.User != "éve" || r.Message != "a\"b\\c/d\n\t😀" || r.PID != 7 {
		t.Errorf("got %+v", r)
	}
	for _, bad := range []string{``, `{`, `{"a":}`, `{"a":"b"`, `{"a":"b"} x`, `{"a":[1]}`, `{"a":"\q"}`, "{\"a\":\"\x01\"}", `[]`} {
		if err := parseJSONLog([]byte(bad), &r); err == nil {
			t.Errorf("parseJSONLog(%q): got no error", bad)
		}
	}
}

// What PostgreSQL sends to syslog (the stderr form, one message per line with
// syslog_split_messages on) is put back together into entries, with the fields of the
// server's log_line_prefix; without the prefix, the SQLSTATE and the user of an
// authentication failure come from the message.
func TestSyslog_StderrForm(t *testing.T) {
	lp, err := newLinePrefix("%m [%p] %q%u@%d %h %a %e ")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []string{
		`<11>1 2024-05-01T10:00:00.123Z db1 postgres 4242 - - [7-1] 2024-05-01 10:00:00.123 UTC [4242] alice@app 10.0.0.9 psql 22P02 ERROR:  invalid input syntax for type integer: "secret@example.com" at character 13`,
		`<11>1 2024-05-01T10:00:00.123Z db1 postgres 4242 - - [7-2] 2024-05-01 10:00:00.123 UTC [4242] alice@app 10.0.0.9 psql 22P02 STATEMENT:  SELECT CAST(email AS int)`,
		`<11>1 2024-05-01T10:00:00.123Z db1 postgres 4242 - - [7-3] 	FROM users WHERE id = 7`,
		`<11>1 2024-05-01T10:00:00.200Z db1 postgres 4243 - [meta x="1\]"] [3-1] 2024-05-01 10:00:00.200 UTC [4243] bob@app 10.0.0.8 [unknown] 28P01 FATAL:  password authentication failed for user "bob"`,
	}
	a := newAssembler(FormatJSON)
	a.prefix = lp
	var recs []Record
	now := time.Now()
	for _, s := range msgs {
		m, err := parseSyslog([]byte(s))
		if err != nil {
			t.Fatalf("parseSyslog(%q): %v", s, err)
		}
		m.Receipt = now
		if recs, err = a.add(m, recs); err != nil {
			t.Fatal(err)
		}
	}
	recs = a.flush(time.Time{}, recs)
	if len(recs) != 2 {
		t.Fatalf("got %d entries, want 2: %+v", len(recs), recs)
	}
	if r := recs[0]; r.User != "alice" || r.Database != "app" || r.Host != "10.0.0.9" || r.Application != "psql" ||
		r.SQLState != "22P02" || r.PID != 4242 || r.Message != `invalid input syntax for type integer: "secret@example.com"` ||
		r.Statement != "SELECT CAST(email AS int)\nFROM users WHERE id = 7" || r.Time.IsZero() {
		t.Errorf("entry 1: %+v", r)
	}
	if r := recs[1]; r.User != "bob" || r.Application != "" || r.SQLState != "28P01" || r.Severity != "FATAL" {
		t.Errorf("entry 2: %+v", r)
	}

	// The same without the prefix's fields.
	a = newAssembler(FormatJSON)
	m, _ := parseSyslog([]byte(msgs[3]))
	recs = a.flush(time.Time{}, must(a.add(m, nil)))
	if len(recs) != 1 || recs[0].SQLState != "28P01" || recs[0].User != "bob" || recs[0].PID != 4243 {
		t.Errorf("without the prefix: %+v", recs)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A jsonlog or csvlog line forwarded by a log shipper is an entry by itself.
func TestSyslog_ForwardedLines(t *testing.T) {
	b, _ := os.ReadFile("testdata/pg15.json")
	line := string(bytes.Split(b, []byte("\n"))[6])
	m, err := parseSyslog([]byte(`<14>1 2024-05-01T10:00:00Z host fluent-bit - - - ` + line))
	if err != nil {
		t.Fatal(err)
	}
	recs := must(newAssembler(FormatJSON).add(m, nil))
	if len(recs) != 1 || recs[0].SQLState != "22P02" {
		t.Fatalf("got %+v", recs)
	}
	csvLine := `2024-05-01 10:00:00.123 UTC,"alice","app",42,"10.1.1.1:5000",s,1,"SELECT",2024-05-01 10:00:00 UTC,3/1,0,ERROR,42601,"syntax error at or near ""x""",,,,,,"x",1,,"","client backend",,0`
	m, _ = parseSyslog([]byte(`<14>1 - - - - - - ` + csvLine))
	recs = must(newAssembler(FormatCSV).add(m, nil))
	if len(recs) != 1 || recs[0].SQLState != "42601" || recs[0].Host != "10.1.1.1" {
		t.Fatalf("got %+v", recs)
	}
}

func TestSyslog_Framing(t *testing.T) {
	one := `<11>1 - h postgres 1 - - [1-1] LOG:  x`
	var got []string
	in := strings.NewReader(strings.Join([]string{
		"5 hello",  // octet-counted
		one + "\n", // newline framed
		"3 a\nb",   // octet-counted, with a newline inside
		"last line without newline",
	}, ""))
	if err := readFrames(in, func(b []byte) { got = append(got, string(b)) }); err != nil {
		t.Fatal(err)
	}
	want := []string{"hello", one, "a\nb", "last line without newline"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{"", "<>1", "<11>2 - - - - - - x", "<11>1 - - - - - [unterminated", "<999>1 - - - - - -"} {
		if _, err := parseSyslog([]byte(bad)); err == nil {
			t.Errorf("parseSyslog(%q): got no error", bad)
		}
	}
}

func TestRedactMessage(t *testing.T) {
	for _, tc := range []struct{ state, in, want string }{
		{"22P02", `invalid input syntax for type integer: "alice@example.com"`, `invalid input syntax for type integer: …`},
		{"23505", `Key (email)=(alice@example.com) already exists.`, `Key … already exists.`},
		{"22P02", `invalid input syntax for type integer: "x" leak "y"`, `invalid input syntax for type integer: …`},
		{"22021", `invalid byte sequence for encoding "UTF8": 0xc3 0x28`, `invalid byte sequence for encoding …: 0x… 0x…`},
		{"22021", `invalid byte sequence for encoding UTF8: 0xc3 0x28`, `invalid byte sequence for encoding UTF8: 0x… 0x…`},
		{"P0001", `the value is alice@example.com`, `<message not shown: 30 bytes>`},
		{"", `anything`, `<message not shown: 8 bytes>`},
		{"42601", `syntax error at end of input`, `syntax error at end of input`},
	} {
		if got := redactMessage(tc.state, tc.in); got != tc.want {
			t.Errorf("redactMessage(%q, %q) = %q, want %q", tc.state, tc.in, got, tc.want)
		}
	}
}
