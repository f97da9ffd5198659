package cli

import (
	"os"
	"strconv"

	"github.com/rogpeppe/go-internal/testscript"
)

// certModeCmd is the script command `certmode FILE MODE`: FILE's permission
// bits equal the octal MODE (key files must be 0600).
func certModeCmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: certmode FILE MODE")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	if err != nil {
		ts.Fatalf("certmode: bad mode %q", args[1])
	}
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	got := st.Mode().Perm()
	if (uint64(got) == want) == neg {
		ts.Fatalf("%s has mode %#o; want %s%#o", args[0], got, map[bool]string{true: "not ", false: ""}[neg], want)
	}
}
