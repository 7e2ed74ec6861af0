package log

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The parsers read what the server, and anyone who can write to the log or send
// syslog, writes: they must never panic, whatever the bytes.

func FuzzJSONLog(f *testing.F) {
	b, _ := os.ReadFile("testdata/pg15.json")
	for l := range strings.SplitSeq(string(b), "\n") {
		f.Add(l)
	}
	f.Add(`{"message":"\ud800\u00","x":-1e}`)
	f.Fuzz(func(t *testing.T, line string) {
		var r Record
		if parseJSONLog([]byte(line), &r) == nil {
			_ = redactMessage(r.SQLState, r.Message)
		}
	})
}

func FuzzCSVLog(f *testing.F) {
	b, _ := os.ReadFile("testdata/pg15.csv")
	f.Add(string(b))
	f.Add("a,\"b\"\"c\",\n")
	f.Fuzz(func(t *testing.T, data string) {
		var p csvParser
		var r Record
		rest := []byte(data)
		for len(rest) > 0 {
			n := csvRecordEnd(rest)
			if n <= 0 || n > len(rest) {
				n = len(rest)
			}
			_ = p.parse(rest[:n], &r)
			rest = rest[n:]
		}
	})
}

func FuzzSyslog(f *testing.F) {
	f.Add(`<11>1 2024-05-01T10:00:00.123Z db1 postgres 4242 - - [7-1] 2024-05-01 10:00:00.123 UTC [4242] alice@app 10.0.0.9 psql 22P02 ERROR:  invalid input syntax for type integer: "x" at character 13`, "%m [%p] %q%u@%d %h %a %e ")
	f.Add(`<11>1 - - - - - [a b="\]"] [7-2] 	FROM users`, "%-10u %r %n %Q %x %%")
	f.Add("<14>1 - h fluent-bit - - - {\"error_severity\":\"ERROR\"}", "")
	f.Fuzz(func(t *testing.T, msg, prefix string) {
		lp, err := newLinePrefix(prefix)
		if err != nil {
			lp = fallbackPrefix
		}
		for _, format := range []string{FormatJSON, FormatCSV} {
			a := newAssembler(format)
			a.prefix = lp
			_ = readFrames(strings.NewReader(msg), func(b []byte) {
				m, err := parseSyslog(b)
				if err != nil {
					return
				}
				m.Receipt = time.Unix(0, 0)
				_, _ = a.add(m, nil)
			})
			_ = a.flush(time.Time{}, nil)
		}
	})
}
