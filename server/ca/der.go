package ca

import (
	"errors"
	"time"
)

// A few DER helpers for the leaf certificate, which is assembled from
// pre-encoded pieces: encoding/asn1's reflection was a tenth of the cost of
// an SVID.

const (
	tagInteger         = 0x02
	tagBitString       = 0x03
	tagOctetString     = 0x04
	tagUTCTime         = 0x17
	tagGeneralizedTime = 0x18
	tagSequence        = 0x30
	tagExplicit3       = 0xa3
	tagURI             = 0x86 // [6] IMPLICIT IA5String in GeneralName
	tagDNSName         = 0x82 // [2] IMPLICIT IA5String in GeneralName
)

// appendHeader appends a tag and a DER length.
func appendHeader(dst []byte, tag byte, n int) []byte {
	dst = append(dst, tag)
	switch {
	case n < 0x80:
		return append(dst, byte(n))
	case n <= 0xff:
		return append(dst, 0x81, byte(n))
	case n <= 0xffff:
		return append(dst, 0x82, byte(n>>8), byte(n))
	default:
		return append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
}

func headerLen(n int) int {
	switch {
	case n < 0x80:
		return 2
	case n <= 0xff:
		return 3
	case n <= 0xffff:
		return 4
	default:
		return 5
	}
}

// appendTLV appends tag, length and content.
func appendTLV(dst []byte, tag byte, content []byte) []byte {
	return append(appendHeader(dst, tag, len(content)), content...)
}

// appendExtension appends an Extension whose value is already DER.
func appendExtension(dst []byte, oid []byte, critical bool, value []byte) []byte {
	n := len(oid) + headerLen(len(value)) + len(value)
	if critical {
		n += 3
	}
	dst = appendHeader(dst, tagSequence, n)
	dst = append(dst, oid...)
	if critical {
		dst = append(dst, 0x01, 0x01, 0xff)
	}
	return appendTLV(dst, tagOctetString, value)
}

// appendTime appends an X.509 Time: UTCTime through 2049, GeneralizedTime
// after (RFC 5280 4.1.2.5).
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		dst = append(dst, tagUTCTime, 13)
		return append(t.AppendFormat(dst, "060102150405"), 'Z')
	}
	dst = append(dst, tagGeneralizedTime, 15)
	return append(t.AppendFormat(dst, "20060102150405"), 'Z')
}

// readTLV splits the first element off der, returning its tag, content and
// the rest.
func readTLV(der []byte) (tag byte, content, rest []byte, err error) {
	if len(der) < 2 {
		return 0, nil, nil, errors.New("truncated DER")
	}
	tag, n, der := der[0], int(der[1]), der[2:]
	if n >= 0x80 {
		k := n & 0x7f
		if k == 0 || k > 3 || len(der) < k {
			return 0, nil, nil, errors.New("bad DER length")
		}
		n = 0
		for _, b := range der[:k] {
			n = n<<8 | int(b)
		}
		der = der[k:]
	}
	if len(der) < n {
		return 0, nil, nil, errors.New("truncated DER")
	}
	return tag, der[:n], der[n:], nil
}

// spkiKeyBits returns the subjectPublicKey bits of a SubjectPublicKeyInfo.
func spkiKeyBits(spki []byte) ([]byte, error) {
	tag, body, _, err := readTLV(spki)
	if err != nil || tag != tagSequence {
		return nil, errors.New("subject public key info is not a SEQUENCE")
	}
	if _, _, body, err = readTLV(body); err != nil { // algorithm
		return nil, err
	}
	tag, bits, _, err := readTLV(body)
	if err != nil || tag != tagBitString || len(bits) < 1 {
		return nil, errors.New("subject public key is not a BIT STRING")
	}
	return bits[1:], nil // skip the unused-bits count
}
