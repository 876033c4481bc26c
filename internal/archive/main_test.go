package archive

import (
	"testing"

	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

// TestMain starts the private PostgreSQL that pgtest.New hands out
// databases of.
func TestMain(m *testing.M) { pgtest.Main(m) }
