package orchestrate

import (
	"testing"

	"github.com/stockpipe/stockpipe/internal/pgembed/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
