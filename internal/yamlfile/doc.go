// Package yamlfile is the one YAML front end of pgtripwire's files: the
// config file (detector/config), rule files (rules/rulefmt) and rule test
// files (rules/ruletest) are read through it, so that they all parse,
// refuse and word problems the same way.
//
// It provides:
//
//   - Parse: exactly one document, with positions; characters YAML refuses
//     and syntax errors placed at their line and, when it can be found,
//     column (yaml.v3's own line numbers are often off), with a hint for an
//     unclosed quote or bracket; and a bound on what aliases expand to (a
//     "billion laughs" file is an error, not an outage).
//   - Error, Errors and Pos: every problem at once, each as
//     "file:line:col: message", sorted by position.
//   - Decoder: strict mappings (unknown keys reported with the known ones,
//     duplicate keys with the first one's position, merge keys refused) and
//     scalars (strings, true/false, decimal integers, numbers, Go and
//     Prometheus durations), each problem worded "where: want X, got Y".
//   - Quote and Describe: values quoted for messages with their secrets
//     redacted (the password of a URL or DSN, whatever follows password=,
//     secret: or token:), in every file, since a secret pasted in the wrong
//     place is still a secret.
//
// It is not a format: which keys a file has, what they mean and which
// values are valid belong to the packages above, as does decoding into
// their types (config's reflective decoder, rulefmt's node walk). It never
// reads files, and has no state beyond one Decoder's errors.
package yamlfile
