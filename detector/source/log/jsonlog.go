package log

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// errMalformed is a line or record that is not what the format says: counted, skipped.
var errMalformed = errors.New("malformed log record")

// parseJSONLog reads one jsonlog line (PostgreSQL 15+: one flat JSON object per line,
// src/backend/utils/error/jsonlog.c) into r. Keys it does not use are skipped; a value
// that is an object or array (never written by the server) is malformed. It is a small
// hand-written scanner rather than encoding/json: the source reads backlogs of
// hundreds of megabytes, and decoding into a struct through reflection costs more
// than the rest of the work together.
func parseJSONLog(line []byte, r *Record) error {
	*r = Record{}
	p := jsonScanner{b: line}
	p.space()
	if !p.eat('{') {
		return errMalformed
	}
	p.space()
	if p.eat('}') {
		return p.end()
	}
	for {
		p.space()
		key, ok := p.str(&p.keyBuf)
		if !ok {
			return errMalformed
		}
		p.space()
		if !p.eat(':') {
			return errMalformed
		}
		p.space()
		val, ok := p.value()
		if !ok {
			return errMalformed
		}
		r.setJSON(key, val)
		p.space()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return p.end()
		}
		return errMalformed
	}
}

// setJSON stores one jsonlog key. The keys are those of PostgreSQL 15 to 17's jsonlog.c;
// val aliases the scanner's buffers, so only the keys kept are copied.
func (r *Record) setJSON(key, val []byte) {
	switch string(key) {
	case "timestamp":
		r.Time = parseLogTime(string(val))
	case "user":
		r.User = string(val)
	case "dbname":
		r.Database = string(val)
	case "pid":
		if n, err := strconv.ParseInt(string(val), 10, 32); err == nil {
			r.PID = int32(n)
		}
	case "remote_host":
		r.Host = string(val)
	case "application_name":
		r.Application = string(val)
	case "backend_type":
		r.BackendType = string(val)
	case "error_severity":
		r.Severity = string(val)
	case "state_code":
		r.SQLState = string(val)
	case "message":
		r.Message = string(val)
	case "detail":
		r.Detail = string(val)
	case "hint":
		r.Hint = string(val)
	case "statement":
		r.Statement = string(val)
	case "query_id":
		if n, err := strconv.ParseInt(string(val), 10, 64); err == nil {
			r.QueryID = n
		}
	}
}

type jsonScanner struct {
	b              []byte
	i              int
	keyBuf, valBuf []byte // unescaped strings
}

func (p *jsonScanner) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScanner) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonScanner) end() error {
	p.space()
	if p.i != len(p.b) {
		return errMalformed
	}
	return nil
}

// value reads a string, number, true, false or null (as ""); numbers and booleans are
// returned as their text. The result aliases the line or p.valBuf.
func (p *jsonScanner) value() ([]byte, bool) {
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		return p.str(&p.valBuf)
	case c == '-' || '0' <= c && c <= '9':
		start := p.i
		for p.i < len(p.b) {
			c := p.b[p.i]
			if c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' || '0' <= c && c <= '9' {
				p.i++
				continue
			}
			break
		}
		return p.b[start:p.i], true
	}
	for _, lit := range []string{"true", "false", "null"} {
		if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			if lit == "null" {
				return nil, true
			}
			return p.b[p.i-len(lit) : p.i], true
		}
	}
	return nil, false
}

// str reads a JSON string: a slice of the line when it holds no escape, else the
// unescaped text in *buf.
func (p *jsonScanner) str(buf *[]byte) ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			p.i++
			return p.b[start : p.i-1], true
		}
		if c == '\\' {
			return p.escaped(start, buf)
		}
		if c < 0x20 {
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// escaped finishes a string holding escapes, from its first one, into *buf.
func (p *jsonScanner) escaped(start int, buf *[]byte) ([]byte, bool) {
	out := append((*buf)[:0], p.b[start:p.i]...)
	defer func() { *buf = out }()
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, true
		case c < 0x20:
			return nil, false
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return nil, false
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, false
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					p.i += 2
					if r2, ok = p.hex4(); !ok {
						return nil, false
					}
				}
				r = utf16.DecodeRune(r, r2)
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return nil, false
}

func (p *jsonScanner) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var n rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return n, true
}
