package wal

import (
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/ddlmsg"
	"github.com/pgtripwire/pgtripwire/model"
)

// pgtripwireMessages turns the logical decoding messages pgtripwire's own database objects
// emit into events: pgtripwire.ddl from the event trigger `pgtripwire setup` installs
// (source=ddl), pgtripwire.canary from the canary policy (source=canary, decoded by
// visits, a canary.Classifier: the statement that visited the canary row is classified
// by the Finish it returns, off the receive loop). Other pgtripwire.* prefixes stay
// source=wal MESSAGE events.
//
// A message that does not decode is still evidence: a DDL message becomes a ddl event of
// kind "undecodable" and a canary message an unclassified canary read (Complete false),
// so a tampered or truncated message pages rather than vanishes. Its content is never
// logged: it is whatever the sender wrote.
func pgtripwireMessages(log *zap.Logger, visits *canary.Classifier) MessageDecoder {
	log = log.Named("messages")
	return func(prefix string, content []byte, transactional bool) (model.Event, Finish, bool) {
		switch prefix {
		case ddlmsg.Prefix:
			ev, _, err := ddlmsg.Decode(prefix, content)
			if err != nil {
				log.Warn("undecodable DDL message; reported as kind undecodable", zap.Int("bytes", len(content)), zap.Error(err))
				return model.Event{Source: ddlmsg.Source, Kind: "undecodable", Rows: 1, Calls: 1}, nil, true
			}
			return ev, nil, true
		case canary.MessagePrefix:
			return visits.Decode(prefix, content, transactional)
		}
		return model.Event{}, nil, false
	}
}
