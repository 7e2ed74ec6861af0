package log

import (
	"bytes"
	"strconv"
	"strings"
)

// csvlog columns (src/backend/utils/error/csvlog.c). PostgreSQL 13 added backend_type
// (24 columns), 14 leader_pid and query_id (26 columns, unchanged in 15 to 17); 12
// and older write 23. A row is read by position, so every one of those layouts is read.
const (
	csvLogTime = iota
	csvUser
	csvDatabase
	csvPID
	csvConnectionFrom
	csvSessionID
	csvSessionLine
	csvCommandTag
	csvSessionStart
	csvVXID
	csvXID
	csvSeverity
	csvSQLState
	csvMessage
	csvDetail
	csvHint
	csvInternalQuery
	csvInternalQueryPos
	csvContext
	csvQuery
	csvQueryPos
	csvLocation
	csvApplication
	csvBackendType
	csvLeaderPID
	csvQueryID

	csvMinColumns = csvApplication + 1 // PostgreSQL 12's 23
	csvMaxColumns = csvQueryID + 1
)

// csvRecordEnd returns the length of the first complete csvlog row in b, its newline
// included, or 0 when b holds only part of one: a row ends at a newline outside
// quotes (RFC 4180: a quoted field may hold newlines, and a row then spans lines).
func csvRecordEnd(b []byte) int {
	quoted := false
	for i := 0; i < len(b); {
		j := bytes.IndexAny(b[i:], "\"\n")
		if j < 0 {
			return 0
		}
		i += j
		if b[i] == '"' {
			quoted = !quoted // a doubled quote toggles twice
		} else if !quoted {
			return i + 1
		}
		i++
	}
	return 0
}

// csvParser reads csvlog rows, reusing its buffers from row to row.
type csvParser struct {
	fields [][]byte
	buf    []byte
}

// parse reads one csvlog row (with or without its newline) into r.
func (p *csvParser) parse(row []byte, r *Record) error {
	*r = Record{}
	row = bytes.TrimSuffix(row, []byte("\n"))
	row = bytes.TrimSuffix(row, []byte("\r"))
	p.fields = p.fields[:0]
	p.buf = p.buf[:0]
	// Fields are appended to buf and sliced afterwards, as buf may move while it grows.
	var ends []int
	for i := 0; ; {
		if len(ends) >= csvMaxColumns+8 {
			return errMalformed // not a csvlog row
		}
		if i < len(row) && row[i] == '"' {
			i++
			for {
				j := bytes.IndexByte(row[i:], '"')
				if j < 0 {
					return errMalformed
				}
				p.buf = append(p.buf, row[i:i+j]...)
				i += j + 1
				if i < len(row) && row[i] == '"' {
					p.buf = append(p.buf, '"')
					i++
					continue
				}
				break
			}
		} else {
			j := bytes.IndexByte(row[i:], ',')
			if j < 0 {
				j = len(row) - i
			}
			field := row[i : i+j]
			if bytes.IndexByte(field, '"') >= 0 {
				return errMalformed
			}
			p.buf = append(p.buf, field...)
			i += j
		}
		ends = append(ends, len(p.buf))
		if i == len(row) {
			break
		}
		if row[i] != ',' {
			return errMalformed
		}
		i++
		if i == len(row) {
			ends = append(ends, len(p.buf)) // a last, empty field
			break
		}
	}
	if len(ends) < csvMinColumns || len(ends) > csvMaxColumns {
		return errMalformed
	}
	start := 0
	for _, e := range ends {
		p.fields = append(p.fields, p.buf[start:e])
		start = e
	}
	f := func(i int) string {
		if i < len(p.fields) {
			return string(p.fields[i])
		}
		return ""
	}
	r.Time = parseLogTime(f(csvLogTime))
	r.User = f(csvUser)
	r.Database = f(csvDatabase)
	if n, err := strconv.ParseInt(f(csvPID), 10, 32); err == nil {
		r.PID = int32(n)
	}
	r.Host = splitConnectionFrom(f(csvConnectionFrom))
	r.Severity = f(csvSeverity)
	r.SQLState = f(csvSQLState)
	r.Message = f(csvMessage)
	r.Detail = f(csvDetail)
	r.Hint = f(csvHint)
	r.Statement = f(csvQuery)
	r.Application = f(csvApplication)
	r.BackendType = f(csvBackendType)
	if n, err := strconv.ParseInt(f(csvQueryID), 10, 64); err == nil {
		r.QueryID = n
	}
	return nil
}

// splitConnectionFrom returns the host of csvlog's connection_from, "host:port" (an
// IPv6 address keeps its colons) or "[local]".
func splitConnectionFrom(s string) string {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || s == "[local]" {
		return s
	}
	if _, err := strconv.Atoi(s[i+1:]); err != nil {
		return s
	}
	return s[:i]
}
