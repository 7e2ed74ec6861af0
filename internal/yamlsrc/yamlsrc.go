// Package yamlsrc locates things in YAML source text the way yaml.v3 counts lines, for
// error messages with file:line:col: the first syntax error of a stream, line
// boundaries, and characters YAML refuses. The config and rule-file loaders share it.
//
// It is not a YAML parser: it works around the positions yaml.v3's errors lack.
package yamlsrc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// FirstError returns the first syntax error in any document of data.
func FirstError(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// LineEnds returns the offset just past each line of data, counting line
// breaks as YAML does (so the numbers match yaml.Node.Line): CR LF, CR, LF,
// NEL, LS and PS. The last line may lack a break.
func LineEnds(data []byte) []int {
	var ends []int
	for i := 0; i < len(data); {
		if n := LineBreakLen(data[i:]); n > 0 {
			i += n
			ends = append(ends, i)
			continue
		}
		_, size := utf8.DecodeRune(data[i:])
		i += size
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	return ends
}

// LineBreakLen returns the length of the YAML line break at the start of b,
// or 0.
func LineBreakLen(b []byte) int {
	switch {
	case bytes.HasPrefix(b, []byte("\r\n")):
		return 2
	case len(b) > 0 && (b[0] == '\r' || b[0] == '\n'):
		return 1
	case bytes.HasPrefix(b, []byte("\u0085")):
		return 2
	case bytes.HasPrefix(b, []byte("\u2028")), bytes.HasPrefix(b, []byte("\u2029")):
		return 3
	}
	return 0
}

// FirstInvalidChar finds the first byte YAML refuses: invalid UTF-8 or a
// non-printable character. yaml.v3 reports those with a byte offset it does
// not expose, so without this check they would have no position.
func FirstInvalidChar(data []byte) (line, col int, msg string, bad bool) {
	line, col = 1, 1
	for i := 0; i < len(data); {
		if n := LineBreakLen(data[i:]); n > 0 {
			i += n
			line, col = line+1, 1
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return line, col, "the file is not valid UTF-8; save it as UTF-8", true
		case !yamlPrintable(r):
			return line, col, fmt.Sprintf("character %U is not allowed in YAML", r), true
		}
		i += size
		col++
	}
	return 0, 0, "", false
}

// yamlPrintable reports whether r may appear in a YAML stream (YAML 1.2
// c-printable, the set yaml.v3 accepts).
func yamlPrintable(r rune) bool {
	switch {
	case r == '\t', r == '\n', r == '\r', r == 0x85:
		return true
	case r >= 0x20 && r <= 0x7e, r >= 0xa0 && r <= 0xd7ff, r >= 0xe000 && r <= 0xfffd, r >= 0x10000 && r <= 0x10ffff:
		return true
	}
	return false
}
