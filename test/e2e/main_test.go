package e2e_test

import (
	"os"
	"testing"

	"github.com/dpsd/dpsd/test/e2e"
)

func TestMain(m *testing.M) { os.Exit(e2e.Main(m)) }
