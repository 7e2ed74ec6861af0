package model

import "testing"

func TestFingerprintIsStableAndLabelSensitive(t *testing.T) {
	a := Fingerprint("SensitiveBulkRead", map[string]string{"table": "public.users", "role": "mallory"})
	b := Fingerprint("SensitiveBulkRead", map[string]string{"role": "mallory", "table": "public.users"})
	if a != b {
		t.Fatalf("got %s and %s for the same labels in another order, want equal", a, b)
	}
	for name, other := range map[string]string{
		"other rule":  Fingerprint("Other", map[string]string{"table": "public.users", "role": "mallory"}),
		"other role":  Fingerprint("SensitiveBulkRead", map[string]string{"table": "public.users", "role": "app"}),
		"shifted k/v": Fingerprint("SensitiveBulkRead", map[string]string{"table": "public.usersrole", "": "mallory"}),
	} {
		if other == a {
			t.Errorf("%s: got the same fingerprint %s, want a different one", name, a)
		}
	}
	if len(a) != 16 {
		t.Fatalf("got %q, want 16 hex digits", a)
	}
}
