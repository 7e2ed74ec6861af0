package response

import (
	"testing"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
