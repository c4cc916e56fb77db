// Package docs holds the project's documentation. It has no code: its test keeps
// conformance.md true to the repository.
//
// conformance.md has one row per rule the broker enforces (DPoP client and server, PKCE,
// ID-token checks, discovery, RFC 9207, logout): the rule, the RFC or OpenID section it comes
// from, where it is enforced and the test that proves it. conformance_test.go reads the table
// and the repository's Go files, so that a renamed function or test, or a code comment citing
// a row that does not exist, fails `go test ./...` instead of leaving the table stale:
//   - TestConformanceRowsPointAtCodeAndTestsThatExist: every file and function a row names is
//     declared there, and every test it names exists in that package;
//   - TestCitedConformanceRowsExist: every row a code comment cites (by its anchor in
//     conformance.md), and every DPoP check name a refused proof reports, is a row.
//
// readme_test.go keeps the README's troubleshooting tables the output of
// logs.TroubleshootingTable and logs.TopicTable, the one source the console's event view also
// shows, and its glossary of event codes that of logs.GlossaryTable (`go test
// ./docs -run TestREADMEGeneratedSectionsComeFromTheLogsPackage -update` rewrites it).
package docs
