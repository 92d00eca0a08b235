package fhirstore

import (
	"math"
	"strconv"
	"time"
)

// Open-ended bounds of date ranges, in Unix milliseconds.
const (
	minDate = math.MinInt64 / 2
	maxDate = math.MaxInt64 / 2
)

// parseDateRange parses a FHIR date, dateTime or instant and returns the
// range it denotes in Unix milliseconds, [lo, hi): "2023" is the whole year,
// "2023-04" the month, "2023-04-05T10:30" that minute, "…:30:05" that second.
// Values without a time zone are taken as UTC.
func parseDateRange(s string) (lo, hi int64, ok bool) {
	n := len(s)
	if n < 4 {
		return 0, 0, false
	}
	year, err := strconv.Atoi(s[:4])
	if err != nil || s[0] == '+' || s[0] == '-' {
		return 0, 0, false
	}
	month, day := 1, 1
	var step func(time.Time) time.Time
	switch {
	case n == 4:
		step = func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }
	case n == 7 && s[4] == '-':
		if month, ok = atoi2(s[5:7], 1, 12); !ok {
			return 0, 0, false
		}
		step = func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }
	case n >= 10 && s[4] == '-' && s[7] == '-':
		if month, ok = atoi2(s[5:7], 1, 12); !ok {
			return 0, 0, false
		}
		if day, ok = atoi2(s[8:10], 1, 31); !ok {
			return 0, 0, false
		}
		if n == 10 {
			step = func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }
			break
		}
		return parseDateTime(s, year, month, day)
	default:
		return 0, 0, false
	}
	t := time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
	if t.Day() != day {
		return 0, 0, false
	}
	return t.UnixMilli(), step(t).UnixMilli(), true
}

// parseDateTime parses the "Thh:mm[:ss[.fff]][Z|±hh:mm]" tail of s.
func parseDateTime(s string, year, month, day int) (lo, hi int64, ok bool) {
	rest := s[10:]
	if len(rest) < 6 || rest[0] != 'T' || rest[3] != ':' {
		return 0, 0, false
	}
	hour, ok1 := atoi2(rest[1:3], 0, 23)
	minute, ok2 := atoi2(rest[4:6], 0, 59)
	if !ok1 || !ok2 {
		return 0, 0, false
	}
	rest = rest[6:]
	sec, nanos := 0, 0
	precision := time.Minute
	if len(rest) >= 3 && rest[0] == ':' {
		if sec, ok = atoi2(rest[1:3], 0, 60); !ok {
			return 0, 0, false
		}
		precision = time.Second
		rest = rest[3:]
		if len(rest) > 1 && rest[0] == '.' {
			i := 1
			for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
				i++
			}
			if i == 1 {
				return 0, 0, false
			}
			frac := rest[1:i]
			if len(frac) > 9 {
				frac = frac[:9]
			}
			f, _ := strconv.Atoi(frac)
			for j := len(frac); j < 9; j++ {
				f *= 10
			}
			nanos = f
			precision = time.Millisecond
			rest = rest[i:]
		}
	}
	loc := time.UTC
	switch {
	case rest == "" || rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := atoi2(rest[1:3], 0, 14)
		om, ok2 := atoi2(rest[4:6], 0, 59)
		if !ok1 || !ok2 {
			return 0, 0, false
		}
		off := oh*3600 + om*60
		if rest[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	default:
		return 0, 0, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nanos, loc)
	if t.Day() != day && sec < 60 {
		return 0, 0, false
	}
	lo = t.UnixMilli()
	return lo, lo + precision.Milliseconds(), true
}

// atoi2 parses a two-digit number in [min, max].
func atoi2(s string, lo, hi int) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	v := int(s[0]-'0')*10 + int(s[1]-'0')
	return v, v >= lo && v <= hi
}
