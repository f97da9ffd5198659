// Package e2e runs the real dpsd binary and drives it with real clients:
// the official Azure IoT Node.js SDKs (test/node), curl, mosquitto. Its
// exported helpers are for the tests of this package and of later ones.
//
// Running:
//
//	npm ci --prefix test/node        # once; the tests fail without it
//	go test ./test/e2e/
//
// TestMain builds ./cmd/dpsd once into a temporary directory (see Main).
// StartServer starts `dpsd serve --data DIR --https-addr 127.0.0.1:0` (and
// --mqtt-addr 127.0.0.1:0 when dpsd has MQTT) in a fresh t.TempDir(), waits
// for DIR/server.json (written once the server listens), reads
// `dpsd info -o json` for the connection string, and stops the server with
// SIGTERM at the end of the test, failing it unless dpsd exits 0. The
// Server it returns has the ID scope, endpoints, CA file and connection
// string; NodeEnv gives them to the scripts of test/node.
//
// Port 443. Some clients cannot dial another port: the Azure Node SDK's
// HTTP transports pass "host:port" to Node as a host name (ENOTFOUND). The
// service SDK scripts work around that with an https.Agent, but a test that
// must use a client unmodified calls StartServer443, which listens on
// 127.0.0.1:443. Binding 443 needs root (CI runs as root) or
// CAP_NET_BIND_SERVICE; the helper fails the test with that hint otherwise.
// Tests and packages that use 443 are serialized through a lock file in the
// temporary directory, so they may run in parallel with everything else.
//
// Several nodes. StartServers starts n servers at once with the same
// arguments; with --store postgres://... they are the nodes of one
// deployment (the multi-node tests give each test a database of its own,
// see multinode_helpers_test.go). Kill ends a server with SIGKILL, as a
// crash would. The PostgreSQL tests fail in CI when DPS_TEST_PG_DSN is
// missing and skip elsewhere; scripts/test.sh starts a throwaway server.
//
// Node. RunNode runs a script of test/node with the given environment and
// returns its standard output. If node or test/node/node_modules is missing
// the test fails (never skips) with the command that fixes it.
package e2e
