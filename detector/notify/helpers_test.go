package notify

import (
	"bytes"
	"encoding/json"
)

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
