package fhirpath

import "errors"

// Precisions of temporal values, coarsest first. Seconds and their fraction are one
// precision, as FHIRPath compares them.
const (
	precYear uint8 = iota + 1
	precMonth
	precDay
	precHour
	precMinute
	precSecond
)

// moment is a parsed Date, DateTime or Time.
type moment struct {
	y, mo, d, h, mi, s int
	nanos              int
	prec               uint8 // number of components present, precYear…precSecond
	tz                 bool
	off                int // offset east of UTC, in minutes
	time               bool
}

var errTemporal = errors.New("malformed date or time")

func num2(s string, i int) (int, bool) {
	if i+2 > len(s) || !isDigit(s[i]) || !isDigit(s[i+1]) {
		return 0, false
	}
	return int(s[i]-'0')*10 + int(s[i+1]-'0'), true
}

// parseMoment parses ISO 8601 text as FHIR and FHIRPath write it: a date
// YYYY(-MM(-DD)?)?, optionally followed by T and a time hh(:mm(:ss(.f+)?)?)? and a zone
// (Z or ±hh:mm); or, with isTime, a time alone. Calendar ranges are checked.
func parseMoment(s string, isTime bool) (moment, error) {
	var m moment
	i := 0
	if !isTime {
		if len(s) < 4 {
			return m, errTemporal
		}
		for ; i < 4; i++ {
			if !isDigit(s[i]) {
				return m, errTemporal
			}
			m.y = m.y*10 + int(s[i]-'0')
		}
		m.prec = precYear
		if i < len(s) && s[i] == '-' {
			v, ok := num2(s, i+1)
			if !ok || v < 1 || v > 12 {
				return m, errTemporal
			}
			m.mo, m.prec, i = v, precMonth, i+3
			if i < len(s) && s[i] == '-' {
				v, ok := num2(s, i+1)
				if !ok || v < 1 || v > daysIn(m.y, m.mo) {
					return m, errTemporal
				}
				m.d, m.prec, i = v, precDay, i+3
			}
		}
		if i == len(s) {
			return m, nil
		}
		if s[i] != 'T' || m.prec != precDay {
			return m, errTemporal
		}
		i++
		if i == len(s) { // @2020-01-01T: a DateTime at day precision
			return m, nil
		}
	} else {
		m.time = true
	}
	v, ok := num2(s, i)
	if !ok || v > 23 {
		return m, errTemporal
	}
	m.h, m.prec, i = v, precHour, i+2
	if i < len(s) && s[i] == ':' {
		v, ok := num2(s, i+1)
		if !ok || v > 59 {
			return m, errTemporal
		}
		m.mi, m.prec, i = v, precMinute, i+3
		if i < len(s) && s[i] == ':' {
			v, ok := num2(s, i+1)
			if !ok || v > 60 {
				return m, errTemporal
			}
			m.s, m.prec, i = v, precSecond, i+3
			if i < len(s) && s[i] == '.' {
				i++
				start := i
				scale := 100000000
				for ; i < len(s) && isDigit(s[i]); i++ {
					m.nanos += int(s[i]-'0') * scale
					scale /= 10
				}
				if i == start {
					return m, errTemporal
				}
			}
		}
	}
	if i == len(s) {
		return m, nil
	}
	if isTime {
		return m, errTemporal
	}
	switch s[i] {
	case 'Z':
		m.tz = true
		i++
	case '+', '-':
		hh, ok1 := num2(s, i+1)
		mm, ok2 := num2(s, i+4)
		if !ok1 || !ok2 || i+3 >= len(s) || s[i+3] != ':' || hh > 14 || mm > 59 {
			return m, errTemporal
		}
		m.tz = true
		m.off = hh*60 + mm
		if s[i] == '-' {
			m.off = -m.off
		}
		i += 6
	}
	if i != len(s) {
		return m, errTemporal
	}
	return m, nil
}

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian date.
func daysFromCivil(y, m, d int) int {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

func civilFromDays(z int) (int, int, int) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era = (z - 146096) / 146097
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

// utc shifts a value with a time of day and a zone to UTC. A value without a zone is
// taken as UTC (FHIR requires a zone whenever a dateTime has a time of day).
func (m moment) utc() moment {
	if !m.tz || m.off == 0 || m.prec < precHour || m.time {
		return m
	}
	mins := daysFromCivil(m.y, m.mo, m.d)*1440 + m.h*60 + m.mi - m.off
	days := mins / 1440
	rem := mins % 1440
	if rem < 0 {
		rem += 1440
		days--
	}
	m.y, m.mo, m.d = civilFromDays(days)
	m.h, m.mi = rem/60, rem%60
	m.off = 0
	return m
}

func (m moment) comp(p uint8) int {
	switch p {
	case precYear:
		return m.y
	case precMonth:
		return m.mo
	case precDay:
		return m.d
	case precHour:
		return m.h
	case precMinute:
		return m.mi
	}
	return m.s*1000000000 + m.nanos
}

// cmpMoment compares two values precision by precision from the coarsest. It returns
// ok=false when one value stops at a precision the other has and they are equal up to
// there: FHIRPath's "unknown" (empty).
func cmpMoment(a, b moment) (int, bool) {
	a, b = a.utc(), b.utc()
	first := precYear
	if a.time {
		first = precHour
	}
	for p := first; p <= precSecond; p++ {
		ha, hb := a.prec >= p, b.prec >= p
		if !ha && !hb {
			return 0, true
		}
		if ha != hb {
			return 0, false
		}
		x, y := a.comp(p), b.comp(p)
		if x < y {
			return -1, true
		}
		if x > y {
			return 1, true
		}
	}
	return 0, true
}

// parseTemporalLiteral validates an @ literal.
func parseTemporalLiteral(k tokKind, text string) (Value, error) {
	switch k {
	case tTime:
		m, err := parseMoment(text, true)
		if err != nil {
			return Value{}, err
		}
		return temporalValue(KindTime, text, m.prec), nil
	case tDate:
		m, err := parseMoment(text, false)
		if err != nil {
			return Value{}, err
		}
		return temporalValue(KindDate, text, m.prec), nil
	}
	m, err := parseMoment(text, false)
	if err != nil {
		return Value{}, err
	}
	return temporalValue(KindDateTime, text, m.prec), nil
}
