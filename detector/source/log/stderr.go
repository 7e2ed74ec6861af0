package log

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The stderr form is what PostgreSQL writes to stderr and to syslog: each line is
// log_line_prefix, a severity or a part's name, two spaces and text
// ("2024-05-01 10:00:00.123 UTC [4242] alice@app ERROR:  invalid input syntax …"),
// and an entry is its first line followed by DETAIL, HINT, QUERY, CONTEXT, LOCATION
// and STATEMENT lines, each with the prefix again; a line of a multi-line text goes on
// on the next line after a tab. It is read through a parser made from the server's
// own log_line_prefix (linePrefix). Severities and parts are English only: the server's
// lc_messages must be C or an English locale (doctor checks it).

// linePrefix parses lines written with one log_line_prefix.
type linePrefix struct {
	re *regexp.Regexp
	// fields[i] is the escape letter of the regexp's group i+1.
	fields []byte
	// src is the log_line_prefix it was made from.
	src string
}

// partRE is what follows the prefix: the severity or part name, two spaces, with
// log_error_verbosity = verbose the SQLSTATE, and the text.
const partRE = `(LOG|ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|DEBUG|DETAIL|HINT|QUERY|CONTEXT|LOCATION|STATEMENT):  (?:([0-9A-Z]{5}): )?(.*)$`

// newLinePrefix compiles log_line_prefix (PostgreSQL 14 to 17's escapes, padding
// such as %-10u included) into a parser.
func newLinePrefix(prefix string) (*linePrefix, error) {
	var b strings.Builder
	var fields []byte
	optional := 0
	b.WriteString(`^`)
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if c != '%' || i+1 >= len(prefix) {
			b.WriteString(regexp.QuoteMeta(string(c)))
			continue
		}
		i++
		padded := false
		for i < len(prefix) && (prefix[i] == '-' || '0' <= prefix[i] && prefix[i] <= '9') {
			padded = true
			i++
		}
		if i >= len(prefix) {
			break
		}
		pat := ""
		switch e := prefix[i]; e {
		case '%':
			b.WriteString(`%`)
			continue
		case 'q':
			b.WriteString(`(?:`)
			optional++
			continue
		case 'a', 'u', 'd', 'h', 'r', 'b', 'i', 'c', 'L':
			pat = `.*?`
		case 'p', 'P', 'l', 'x':
			pat = `\d*`
		case 'e':
			pat = `[0-9A-Z]{5}`
		case 'm':
			pat = `\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+`
		case 't', 's':
			pat = `\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+`
		case 'n':
			pat = `\d+\.\d+`
		case 'v':
			pat = `\S*`
		case 'Q':
			pat = `-?\d+`
		default:
			// An escape PostgreSQL does not know prints nothing.
			continue
		}
		if padded {
			b.WriteString(` *(` + pat + `) *`)
		} else {
			b.WriteString(`(` + pat + `)`)
		}
		fields = append(fields, prefix[i])
	}
	for range optional {
		b.WriteString(`)?`)
	}
	b.WriteString(partRE)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("log_line_prefix %q: %w", prefix, err)
	}
	return &linePrefix{re: re, fields: fields, src: prefix}, nil
}

// stderrLine is one line of the stderr form.
type stderrLine struct {
	prefix   map[byte]string // by escape letter
	part     string          // ERROR, DETAIL, STATEMENT, …
	sqlState string          // with log_error_verbosity = verbose
	text     string
}

// parse reads one line; ok is false for a line that does not start with the prefix
// and a part (a continuation).
func (lp *linePrefix) parse(line string) (stderrLine, bool) {
	m := lp.re.FindStringSubmatch(line)
	if m == nil {
		return stderrLine{}, false
	}
	l := stderrLine{prefix: make(map[byte]string, len(lp.fields))}
	for i, f := range lp.fields {
		if m[i+1] != "" {
			l.prefix[f] = m[i+1]
		}
	}
	n := len(lp.fields)
	l.part, l.sqlState, l.text = m[n+1], m[n+2], m[n+3]
	return l, true
}

// primary reports whether a part starts an entry (a severity), rather than adding to one.
func primary(part string) bool {
	switch part {
	case "DETAIL", "HINT", "QUERY", "CONTEXT", "LOCATION", "STATEMENT":
		return false
	}
	return true
}

// stderrEntry gathers the lines of one entry of the stderr form.
type stderrEntry struct {
	first stderrLine
	parts map[string]*strings.Builder
	last  *strings.Builder // where a continuation line goes
}

func (e *stderrEntry) add(l stderrLine) {
	if e.parts == nil {
		e.parts = make(map[string]*strings.Builder)
	}
	b := e.parts[l.part]
	if b == nil {
		b = &strings.Builder{}
		e.parts[l.part] = b
	}
	b.WriteString(l.text)
	e.last = b
}

// continued adds a line that is not a new part: after a tab, a new line of the
// current part's text; otherwise (syslog's split of a long line) more of it.
func (e *stderrEntry) continued(text string) {
	if e.last == nil {
		return
	}
	if t, ok := strings.CutPrefix(text, "\t"); ok {
		e.last.WriteByte('\n')
		text = t
	}
	e.last.WriteString(text)
}

func (e *stderrEntry) part(name string) string {
	if b := e.parts[name]; b != nil {
		return b.String()
	}
	return ""
}

// record turns the entry into a Record. The SQLSTATE comes from %e or verbose
// messages; without either it is inferred from the English message (inferSQLState).
func (e *stderrEntry) record() Record {
	p := e.first.prefix
	r := Record{
		User:        p['u'],
		Database:    p['d'],
		Application: p['a'],
		BackendType: p['b'],
		Host:        p['h'],
		Severity:    e.first.part,
		SQLState:    p['e'],
		Message:     e.part(e.first.part),
		Detail:      e.part("DETAIL"),
		Hint:        e.part("HINT"),
		Statement:   e.part("STATEMENT"),
	}
	for _, f := range []*string{&r.User, &r.Database, &r.Application, &r.Host} {
		if *f == "[unknown]" {
			*f = "" // what %u, %d, %a and %h print for nothing
		}
	}
	// The stderr form appends the error's position to the message; the files' formats
	// keep it apart.
	if i := strings.LastIndex(r.Message, " at character "); i >= 0 {
		if _, err := strconv.Atoi(r.Message[i+len(" at character "):]); err == nil {
			r.Message = r.Message[:i]
		}
	}
	if r.Host == "" {
		if h := p['r']; h != "" {
			r.Host, _, _ = strings.Cut(h, "(") // host(port)
		}
	}
	if n, err := strconv.ParseInt(p['p'], 10, 32); err == nil {
		r.PID = int32(n)
	}
	if n, err := strconv.ParseInt(p['Q'], 10, 64); err == nil {
		r.QueryID = n
	}
	switch {
	case p['m'] != "":
		r.Time = parseLogTime(p['m'])
	case p['t'] != "":
		r.Time = parseLogTime(p['t'])
	case p['n'] != "":
		if f, err := strconv.ParseFloat(p['n'], 64); err == nil {
			r.Time = time.UnixMilli(int64(f * 1000))
		}
	}
	if r.SQLState == "" || r.SQLState == "00000" {
		r.SQLState = e.first.sqlState
	}
	if r.SQLState == "" || r.SQLState == "00000" {
		r.SQLState = inferSQLState(r.Severity, r.Message)
	}
	if r.User == "" && (r.SQLState == "28P01" || r.SQLState == "28000") {
		r.User = quotedAfter(r.Message, `user "`)
	}
	return r
}

// inferSQLState names the SQLSTATE of the errors the source makes events of from their
// English message, for a log_line_prefix without %e. It knows only those.
func inferSQLState(severity, msg string) string {
	if severity != "ERROR" && severity != "FATAL" {
		return ""
	}
	missing := strings.HasSuffix(msg, "does not exist")
	has := func(prefix string) bool { return strings.HasPrefix(msg, prefix) }
	switch {
	case has("password authentication failed for user"):
		return "28P01"
	case has("no pg_hba.conf entry for"), has("pg_hba.conf rejects connection"),
		severity == "FATAL" && has(`role "`): // does not exist, is not permitted to log in
		return "28000"
	case has("permission denied for"), has("must be owner of"):
		return "42501"
	case has("syntax error at"):
		return "42601"
	case has("invalid input syntax for"):
		return "22P02"
	case has("date/time field value out of range"):
		return "22008"
	case strings.Contains(msg, "out of range"):
		return "22003"
	case has(`relation "`) && missing:
		return "42P01"
	case has(`column "`) && missing:
		return "42703"
	case has("function ") && missing:
		return "42883"
	}
	return ""
}

// quotedAfter returns the text between marker and the next quote in msg.
func quotedAfter(msg, marker string) string {
	i := strings.Index(msg, marker)
	if i < 0 {
		return ""
	}
	rest := msg[i+len(marker):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}
