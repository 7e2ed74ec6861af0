package rulefmt

// The helpers in this file follow detector/config's decoder (same YAML
// library, same pitfalls); they are copied rather than shared because the
// rule format must not depend on the daemon's configuration package.

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pgtripwire/pgtripwire/internal/yamlsrc"

	"go.yaml.in/yaml/v3"
)

// parseYAML checks the text and parses it into a node tree. It returns the
// top-level node (nil for an empty file) and whether there is a tree to
// decode.
func (d *decoder) parseYAML() (*yaml.Node, bool) {
	if line, col, msg, bad := yamlsrc.FirstInvalidChar(d.data); bad {
		d.errorAt(line, col, "%s", msg)
		return nil, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(d.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, true
	} else if err != nil {
		d.syntaxError(err)
		return nil, false
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.syntaxError(err)
			return nil, false
		}
		if len(next.Content) == 1 && !isNull(next.Content[0]) {
			d.errorAt(next.Line, next.Column, "a second YAML document starts here; a rule file holds one")
			break
		}
	}
	if len(doc.Content) != 1 || isNull(doc.Content[0]) {
		return nil, true
	}
	return doc.Content[0], true
}

var yamlLine = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// syntaxError records a yaml.v3 syntax error. yaml.v3's line numbers are not
// reliable (it omits some and reports others a line early), so the line is
// the first one whose inclusion makes the file fail this way, found by
// bisecting on prefixes of the file.
func (d *decoder) syntaxError(err error) {
	msg, line, col := strings.TrimPrefix(err.Error(), "yaml: "), 0, 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	ends := yamlsrc.LineEnds(d.data)
	if k := sort.Search(len(ends), func(i int) bool {
		e := yamlsrc.FirstError(d.data[:ends[i]])
		return e != nil && e.Error() == err.Error()
	}); k < len(ends) {
		line = k + 1
		col = d.syntaxColumn(err, ends, k)
	}
	if strings.Contains(msg, "end of stream") {
		msg += " (an unclosed quote or bracket?)"
	}
	d.errorAt(max(line, 1), col, "invalid YAML: %s", msg)
}

// syntaxColumn finds the column of a syntax error on line k (0-based) the
// same way: the first character of the line whose inclusion makes the file
// fail as it does. It returns 0 (unknown) when no character does, as when
// the error is about what follows the line.
func (d *decoder) syntaxColumn(err error, ends []int, k int) int {
	start := 0
	if k > 0 {
		start = ends[k-1]
	}
	line := d.data[start:ends[k]]
	i := sort.Search(len(line), func(i int) bool {
		e := yamlsrc.FirstError(d.data[:start+i+1])
		return e != nil && e.Error() == err.Error()
	})
	if i >= len(line) || yamlsrc.LineBreakLen(line[i:]) > 0 {
		return 0
	}
	return utf8.RuneCount(line[:i]) + 1
}

// sourceLines splits data into lines without their breaks, as YAML counts
// them: sourceLines(data)[n.Line-1] is the text of node n's line.
func sourceLines(data []byte) []string {
	var lines []string
	start := 0
	for _, end := range yamlsrc.LineEnds(data) {
		l := data[start:end]
		for len(l) > 0 && (l[len(l)-1] == '\n' || l[len(l)-1] == '\r') {
			l = l[:len(l)-1]
		}
		l = bytes.TrimSuffix(bytes.TrimSuffix(bytes.TrimSuffix(l, []byte("\u0085")), []byte("\u2028")), []byte("\u2029"))
		lines = append(lines, string(l))
		start = end
	}
	return lines
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "null"
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		return "the quoted string " + quote(n.Value)
	default:
		return quote(n.Value)
	}
}

// quote quotes a value from the file for a message, shortened so that a
// pasted blob does not flood the terminal.
func quote(s string) string {
	const maxRunes = 40
	if utf8.RuneCountInString(s) > maxRunes {
		s = string([]rune(s)[:maxRunes]) + "…"
	}
	return strconv.Quote(s)
}

// ParseYAML parses data as one YAML document the way rule files are parsed,
// for the other YAML files that come with rules (rule tests): it returns
// the top-level node (nil for an empty document) or the syntax error with
// its file:line:col.
func ParseYAML(name string, data []byte) (*yaml.Node, Errors) {
	d := &decoder{file: name, data: data}
	n, ok := d.parseYAML()
	if !ok {
		return nil, d.errs
	}
	return n, nil
}
