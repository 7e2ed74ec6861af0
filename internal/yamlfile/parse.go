package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxValues bounds the number of values in a file once its aliases are
// expanded, so that a few aliases repeated many times (a "billion laughs"
// file) cannot make loading explode. A real file holds a few hundred.
const MaxValues = 100_000

// Parse checks data, the contents of file, and parses it as one YAML
// document. kind names the file in messages ("config file", "rule file").
//
// It returns the document's top-level node and the problems found. The node
// is nil when there is nothing to decode: an empty document (nothing but
// comments, or "---" alone), characters YAML refuses, a syntax error (placed
// at the line, and the column when one is found, that makes the file fail),
// or more than MaxValues values once aliases are expanded. A second
// document is an error too, but the first is still returned, so that its
// own problems are reported with it.
func Parse(file string, data []byte, kind string) (*yaml.Node, Errors) {
	errorAt := func(line, col int, format string, args ...any) Errors {
		return Errors{{Pos: Pos{File: file, Line: line, Column: col}, Msg: fmt.Sprintf(format, args...)}}
	}
	if line, col, msg, bad := firstInvalidChar(data); bad {
		return nil, errorAt(line, col, "%s", msg)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil // empty, or only comments
	} else if err != nil {
		line, col, msg := syntaxError(data, err)
		return nil, errorAt(line, col, "invalid YAML: %s", msg)
	}
	var errs Errors
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, col, msg := syntaxError(data, err)
			return nil, errorAt(line, col, "invalid YAML: %s", msg)
		}
		if len(next.Content) == 1 && !IsNull(next.Content[0]) {
			errs = errorAt(next.Line, next.Column, "a second YAML document starts here; a %s holds one", kind)
			break
		}
	}
	if len(doc.Content) != 1 || IsNull(doc.Content[0]) {
		return nil, errs // "---" alone
	}
	root := doc.Content[0]
	if at := tooManyValues(root); at != nil {
		return nil, errorAt(at.Line, at.Column, "more than %d values once aliases are expanded; a %s needs far fewer", MaxValues, kind)
	}
	return root, errs
}

var yamlLine = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// syntaxError places a yaml.v3 syntax error and words it for a person.
// yaml.v3's line numbers are not reliable: it omits the line for scanner
// errors on the first line and for unknown aliases, and reports some parser
// errors one line early (0-based) or at the start of the enclosing block.
// The line that matters to a person is the first line whose inclusion makes
// the file fail this way, so it is found by bisecting on prefixes of the
// file: a prefix that stops before the problem parses, or fails differently.
// The column is found the same way within that line.
func syntaxError(data []byte, err error) (line, col int, msg string) {
	msg = strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	failsThisWay := func(prefix []byte) bool {
		e := firstError(prefix)
		return e != nil && e.Error() == err.Error()
	}
	ends := lineEnds(data)
	if k := sort.Search(len(ends), func(i int) bool { return failsThisWay(data[:ends[i]]) }); k < len(ends) {
		line = k + 1
		col = syntaxColumn(data, ends, k, failsThisWay)
	}
	if strings.Contains(msg, "end of stream") {
		msg += " (an unclosed quote or bracket?)"
	}
	return max(line, 1), col, msg
}

// syntaxColumn finds the column of a syntax error on line k (0-based): the
// first character of the line whose inclusion makes the file fail as it
// does. It returns 0 (unknown) when no character does, as when the error is
// about what follows the line.
func syntaxColumn(data []byte, ends []int, k int, failsThisWay func([]byte) bool) int {
	start := 0
	if k > 0 {
		start = ends[k-1]
	}
	line := data[start:ends[k]]
	i := sort.Search(len(line), func(i int) bool { return failsThisWay(data[:start+i+1]) })
	if i >= len(line) || lineBreakLen(line[i:]) > 0 {
		return 0
	}
	return utf8.RuneCount(line[:i]) + 1
}

// firstError returns the first syntax error in any document of data.
func firstError(data []byte) error {
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

// tooManyValues returns the node to blame when the tree at root holds more
// than MaxValues values once its aliases are expanded, or nil. Keys are not
// counted. The blame goes to the alias whose expansion passes the bound,
// since that is the line to fix, or to the value that passes it in a file
// that is simply that large.
func tooManyValues(root *yaml.Node) *yaml.Node {
	x := expansion{sizes: map[*yaml.Node]int{}}
	if x.size(root) <= MaxValues {
		return nil
	}
	return x.find(root)
}

type expansion struct {
	sizes map[*yaml.Node]int // expanded sizes, for aliases met again
	total int                // values met so far by find
}

// size returns the number of values at n once aliases are expanded, or
// MaxValues+1 if there are more. The sizes of nodes are remembered, so that
// counting costs one visit of each node whatever the aliases multiply.
func (x *expansion) size(n *yaml.Node) int {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return 1
		}
		n = n.Alias
	}
	if s, ok := x.sizes[n]; ok {
		return s
	}
	s := 1
	for _, c := range values(n) {
		s = min(s+x.size(c), MaxValues+1)
	}
	x.sizes[n] = s
	return s
}

// find walks the tree in file order, without expanding aliases, and returns
// the node at which the count of values passes MaxValues.
func (x *expansion) find(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		x.total += x.size(n)
	} else {
		x.total++
	}
	if x.total > MaxValues {
		return n
	}
	if n.Kind == yaml.AliasNode {
		return nil
	}
	for _, c := range values(n) {
		if at := x.find(c); at != nil {
			return at
		}
	}
	return nil
}

// values returns the values directly inside n: a mapping's values (not its
// keys), a list's elements.
func values(n *yaml.Node) []*yaml.Node {
	switch n.Kind {
	case yaml.MappingNode:
		vs := make([]*yaml.Node, 0, len(n.Content)/2)
		for i := 1; i < len(n.Content); i += 2 {
			vs = append(vs, n.Content[i])
		}
		return vs
	case yaml.SequenceNode, yaml.DocumentNode:
		return n.Content
	}
	return nil
}

// Lines splits data into lines without their breaks, counting lines as YAML
// does: Lines(data)[n.Line-1] is the text of node n's line.
func Lines(data []byte) []string {
	var lines []string
	start := 0
	for _, end := range lineEnds(data) {
		l := data[start:end]
		l = l[:len(l)-lineBreakLenAtEnd(l)]
		lines = append(lines, string(l))
		start = end
	}
	return lines
}

// lineEnds returns the offset just past each line of data, counting line
// breaks as YAML does (so the numbers match yaml.Node.Line): CR LF, CR, LF,
// NEL, LS and PS. The last line may lack a break.
func lineEnds(data []byte) []int {
	var ends []int
	for i := 0; i < len(data); {
		if n := lineBreakLen(data[i:]); n > 0 {
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

// lineBreaks are YAML's line breaks, the two-byte CR LF first.
var lineBreaks = [][]byte{[]byte("\r\n"), []byte("\r"), []byte("\n"), []byte("\u0085"), []byte("\u2028"), []byte("\u2029")}

// lineBreakLen returns the length of the YAML line break at the start of b,
// or 0.
func lineBreakLen(b []byte) int {
	for _, lb := range lineBreaks {
		if bytes.HasPrefix(b, lb) {
			return len(lb)
		}
	}
	return 0
}

// lineBreakLenAtEnd returns the length of the YAML line break at the end of
// b, or 0.
func lineBreakLenAtEnd(b []byte) int {
	for _, lb := range lineBreaks {
		if bytes.HasSuffix(b, lb) {
			return len(lb)
		}
	}
	return 0
}

// firstInvalidChar finds the first byte YAML refuses: invalid UTF-8 or a
// non-printable character. yaml.v3 reports those with a byte offset it does
// not expose, so without this check they would have no position.
func firstInvalidChar(data []byte) (line, col int, msg string, bad bool) {
	line, col = 1, 1
	for i := 0; i < len(data); {
		if n := lineBreakLen(data[i:]); n > 0 {
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
