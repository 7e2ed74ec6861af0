package log

import (
	"cmp"
	"regexp"
	"slices"
	"strings"
	"time"
)

// fallbackPrefix reads stderr-form lines whatever log_line_prefix wrote before the
// severity, while the server's own prefix is unknown: no field of the prefix is read
// then (the SQLSTATE and an authentication failure's user come from the message).
var fallbackPrefix = func() *linePrefix {
	return &linePrefix{re: regexp.MustCompile(`^.*?` + partRE), src: "(unknown)"}
}()

// syslogSeq is PostgreSQL's numbering of what it sends to syslog: "[seq-chunk] " with
// syslog_split_messages on (the default: every line of an entry, and every 900 bytes
// of a long line, is a message of its own), "[seq] " with it off.
var syslogSeq = regexp.MustCompile(`^\[(\d+)(?:-(\d+))?\] `)

// assembler turns syslog messages back into log entries. A message holds a jsonlog or
// csvlog line forwarded by a log shipper (complete by itself), or PostgreSQL's own
// syslog output: the stderr form, split into lines (assembled per sending process).
type assembler struct {
	format  string
	prefix  *linePrefix
	csv     csvParser
	pending map[string]*pendingEntry
	started uint64 // entries begun so far: their order
	// wait is how long an entry waits for more lines after its last one.
	wait time.Duration
}

type pendingEntry struct {
	entry stderrEntry
	seq   string
	last  time.Time
	order uint64 // when it began among the assembler's entries
}

func newAssembler(format string) *assembler {
	return &assembler{format: format, prefix: fallbackPrefix, pending: map[string]*pendingEntry{}, wait: time.Second}
}

// add reads one message; finished entries are appended to out.
func (a *assembler) add(m syslogMessage, out []Record) ([]Record, error) {
	body := m.Body
	seq := ""
	if sm := syslogSeq.FindStringSubmatch(body); sm != nil {
		seq = sm[1]
		body = body[len(sm[0]):]
	}
	switch trimmed := strings.TrimLeft(body, " "); {
	case strings.HasPrefix(trimmed, "{"):
		var r Record
		if err := parseJSONLog([]byte(trimmed), &r); err != nil {
			return out, err
		}
		return append(out, r), nil
	case a.format == FormatCSV && csvRecordEnd([]byte(trimmed+"\n")) > 0:
		var r Record
		if err := a.csv.parse([]byte(trimmed), &r); err == nil {
			return append(out, r), nil
		}
	}
	key := m.Host + "\x00" + m.ProcID
	p := a.pending[key]
	for line := range strings.SplitSeq(body, "\n") {
		l, ok := a.prefix.parse(line)
		switch {
		case ok && primary(l.part):
			if p != nil {
				out = append(out, p.record(m))
			}
			a.started++
			p = &pendingEntry{seq: seq, order: a.started}
			p.entry.first = l
			p.entry.add(l)
			a.pending[key] = p
		case p == nil:
			// The rest of an entry whose start was not received: dropped.
		case ok && (seq == "" || seq == p.seq):
			p.entry.add(l)
		case seq == "" || seq == p.seq:
			p.entry.continued(line)
		}
	}
	if p != nil {
		p.last = m.Receipt
	}
	return out, nil
}

func (p *pendingEntry) record(m syslogMessage) Record {
	r := p.entry.record()
	if r.PID == 0 && m.ProcID != "" {
		r.PID = pid(m.ProcID)
	}
	return r
}

// flush finishes the entries that got no line for a.wait before now (all of them when
// now is zero).
// Entries finish in the order they began, whatever the map's order.
func (a *assembler) flush(now time.Time, out []Record) []Record {
	var due []string
	for key, p := range a.pending {
		if now.IsZero() || now.Sub(p.last) >= a.wait {
			due = append(due, key)
		}
	}
	slices.SortFunc(due, func(x, y string) int { return cmp.Compare(a.pending[x].order, a.pending[y].order) })
	for _, key := range due {
		_, procID, _ := strings.Cut(key, "\x00")
		out = append(out, a.pending[key].record(syslogMessage{ProcID: procID}))
		delete(a.pending, key)
	}
	return out
}

func pid(s string) int32 {
	var n int32
	for _, c := range s {
		if c < '0' || c > '9' || n > 1<<27 {
			return 0
		}
		n = n*10 + c - '0'
	}
	return n
}
