package sqlstore

// The lookups. Each is served by an index (TestSQLiteLookupsUseIndexes
// checks the plans), because tables grow to millions of rows.
const (
	qEnrollment                = selectEnrollment + ` WHERE key = $1`
	qEnrollmentsAfter          = selectEnrollment + ` WHERE key > $1 ORDER BY key LIMIT $2`
	qGroup                     = selectGroup + ` WHERE key = $1`
	qGroupsAfter               = selectGroup + ` WHERE key > $1 ORDER BY key LIMIT $2`
	qGroupsBySigningCert       = selectGroup + ` WHERE key IN (SELECT group_key FROM group_signing_certs WHERE sha256_thumbprint = $1) ORDER BY key`
	qGroupsByCA                = selectGroup + ` WHERE key IN (SELECT group_key FROM group_ca_refs WHERE ca_key = $1) ORDER BY key`
	qSigningCertsBySubject     = `SELECT der FROM group_signing_certs WHERE subject = $1 AND der IS NOT NULL ORDER BY group_key, slot`
	qGroupsByAttestation       = selectGroup + ` WHERE attestation_type = $1 ORDER BY key`
	qDeleteGroupSigningCerts   = `DELETE FROM group_signing_certs WHERE group_key = $1`
	qDeleteGroupCARefs         = `DELETE FROM group_ca_refs WHERE group_key = $1`
	qPolicy                    = selectPolicy + ` WHERE key = $1`
	qCA                        = selectCA + ` WHERE key = $1`
	qCAsByThumbprint           = selectCA + ` WHERE sha256_thumbprint = $1 ORDER BY key`
	qCAsBySubject              = selectCA + ` WHERE subject = $1 ORDER BY key`
	qHub                       = selectHub + ` WHERE key = $1`
	qRegistration              = selectRegistration + ` WHERE key = $1`
	qRegistrationsByGroup      = selectRegistration + ` WHERE group_key = $1 AND key > $2 ORDER BY key LIMIT $3`
	qRegistrationsAfter        = selectRegistration + ` WHERE key > $1 ORDER BY key LIMIT $2`
	qIssuingCA                 = selectIssuingCA + ` WHERE key = $1`
	qIssued                    = selectIssued + ` WHERE key = $1`
	qIssuedByThumbprint        = selectIssued + ` WHERE sha256_thumbprint = $1 ORDER BY key LIMIT 1`
	qIssuedAfter               = selectIssued + ` WHERE key > $1 ORDER BY key LIMIT $2`
	qIssuedByRegistration      = selectIssued + ` WHERE registration_key = $1 AND key > $2 ORDER BY key LIMIT $3`
	qIssuedByCA                = selectIssued + ` WHERE ca_key = $1 AND key > $2 ORDER BY key LIMIT $3`
	qIssuedByRegistrationAndCA = selectIssued + ` WHERE registration_key = $1 AND ca_key = $2 AND key > $3 ORDER BY key LIMIT $4`
	qIssuedOfRegistration      = selectIssued + ` WHERE registration_key = $1 ORDER BY key`
	qRevokedByCA               = selectIssued + ` WHERE ca_key = $1 AND revoked > 0 ORDER BY key`
	qOperation                 = selectOperation + ` WHERE id = $1`
	qExpiredJobs               = selectOperation + ` WHERE job IS NOT NULL AND lease_until < $1 ORDER BY lease_until LIMIT $2`
	qDeleteExpiredOperations   = `DELETE FROM operations WHERE id IN (SELECT id FROM operations WHERE expires < $1 ORDER BY expires LIMIT $2)`
)
