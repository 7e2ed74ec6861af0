package yamlsrc

import (
	"slices"
	"testing"
)

func TestLineEndsCountsBreaksAsYAMLDoes(t *testing.T) {
	tests := []struct {
		in   string
		want []int
	}{
		{"", []int{0}},
		{"a\nb", []int{2, 3}},
		{"a\r\nb\n", []int{3, 5}},
		{"a\rb\u2028c", []int{2, 6, 7}},
	}
	for _, tt := range tests {
		if got := LineEnds([]byte(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("LineEnds(%q): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestFirstInvalidChar(t *testing.T) {
	line, col, msg, bad := FirstInvalidChar([]byte("a: b\nc: \x01"))
	if !bad || line != 2 || col != 4 || msg == "" {
		t.Fatalf("got %d:%d %q %v, want 2:4 and a reason", line, col, msg, bad)
	}
	if _, _, _, bad := FirstInvalidChar([]byte("a: é\n")); bad {
		t.Fatal("valid UTF-8 reported invalid")
	}
	if _, _, _, bad := FirstInvalidChar([]byte{'a', 0xff}); !bad {
		t.Fatal("invalid UTF-8 not reported")
	}
}

func TestFirstError(t *testing.T) {
	if err := FirstError([]byte("a: 1\n---\nb: [\n")); err == nil {
		t.Fatal("got nil for an unclosed flow sequence in the second document, want an error")
	}
	if err := FirstError([]byte("a: 1\n")); err != nil {
		t.Fatalf("got %v for valid YAML", err)
	}
}
