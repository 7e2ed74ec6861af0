package pgtest

import (
	"regexp"
	"testing"
)

func TestDatabaseName(t *testing.T) {
	long := "TestAVeryLongTestNameThatGoesOnAndOn/with_a_subtest_that_is_also_long_enough"
	for _, tc := range []struct {
		test string
		seq  int64
		want string
	}{
		{"TestAlert", 1, "testalert_1"},
		{"TestAlert/bulk read#01", 7, "testalert_bulk_read_01_7"},
		{"TestÜber/--x--", 3, "test_ber_x_3"},
		{"123", 2, "db_123_2"},
		{"///", 4, "db_4"},
		{long, 12345, "testaverylongtestnamethatgoesonandon_with_a_subtest_that_12345"},
	} {
		got := databaseName(tc.test, tc.seq)
		if got != tc.want {
			t.Errorf("databaseName(%q, %d) = %q, want %q", tc.test, tc.seq, got, tc.want)
		}
	}
	valid := regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	if got := databaseName(long+long, 1<<40); !valid.MatchString(got) {
		t.Errorf("databaseName of a long name = %q (%d bytes), not a plain identifier of at most 63 bytes", got, len(got))
	}
}
