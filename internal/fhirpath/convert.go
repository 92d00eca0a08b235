package fhirpath

import "strings"

// convert implements toX() and convertsToX().
func (e *Evaluator) convert(x *node, inLo, inHi int) error {
	v, ok, err := e.input(x, inLo, inHi)
	if err != nil || !ok {
		return err
	}
	var r Value
	switch x.fn.id {
	case fnToInteger, fnConvertsToInteger:
		r, ok = toInteger(v)
	case fnToDecimal, fnConvertsToDecimal:
		r, ok = toDecimal(v)
	case fnToString, fnConvertsToString:
		if v.kind == KindNode || v.kind == kindRef {
			ok = false
		} else {
			r, ok = stringValue(v.String()), true
			if v.kind == KindString {
				r = v
			}
		}
	case fnToBoolean, fnConvertsToBoolean:
		r, ok = toBoolean(v)
	case fnToQuantity, fnConvertsToQuantity:
		r, ok = toQuantity(v)
	case fnToDate, fnConvertsToDate:
		r, ok = toTemporal(v, KindDate)
	case fnToDateTime, fnConvertsToDateTime:
		r, ok = toTemporal(v, KindDateTime)
	case fnToTime, fnConvertsToTime:
		r, ok = toTemporal(v, KindTime)
	}
	if x.fn.id >= fnConvertsToInteger {
		e.buf = append(e.buf, boolValue(ok))
		return nil
	}
	if ok {
		e.buf = append(e.buf, r)
	}
	return nil
}

func toInteger(v Value) (Value, bool) {
	switch v.kind {
	case KindInteger:
		return v, true
	case KindBoolean:
		return intValue(v.num), true
	case KindString:
		if i, ok := parseInt(v.str); ok {
			return intValue(i), true
		}
	}
	return Value{}, false
}

func toDecimal(v Value) (Value, bool) {
	switch v.kind {
	case KindInteger, KindDecimal:
		return decimalValue(v.dec()), true
	case KindBoolean:
		return decimalValue(decimal{c: v.num}), true
	case KindString:
		s := v.str
		if strings.ContainsAny(s, "eE") {
			return Value{}, false
		}
		if d, err := parseDecimal(s); err == nil {
			return decimalValue(d), true
		}
	}
	return Value{}, false
}

func toBoolean(v Value) (Value, bool) {
	switch v.kind {
	case KindBoolean:
		return v, true
	case KindInteger:
		if v.num == 0 || v.num == 1 {
			return boolValue(v.num == 1), true
		}
	case KindDecimal:
		switch cmpDecimal(v.dec(), decimal{c: 1}) {
		case 0:
			return boolValue(true), true
		}
		if v.num == 0 {
			return boolValue(false), true
		}
	case KindString:
		switch strings.ToLower(v.str) {
		case "true", "t", "yes", "y", "1", "1.0":
			return boolValue(true), true
		case "false", "f", "no", "n", "0", "0.0":
			return boolValue(false), true
		}
	}
	return Value{}, false
}

func toQuantity(v Value) (Value, bool) {
	switch v.kind {
	case KindQuantity:
		return v, true
	case KindInteger, KindDecimal:
		return quantityValue(v.dec(), "1"), true
	case KindString:
		return parseQuantityString(v.str)
	}
	return Value{}, false
}

func toTemporal(v Value, k Kind) (Value, bool) {
	switch v.kind {
	case KindString:
		if k == KindTime {
			m, err := parseMoment(strings.TrimPrefix(v.str, "T"), true)
			if err != nil {
				return Value{}, false
			}
			return temporalValue(k, strings.TrimPrefix(v.str, "T"), m.prec), true
		}
		m, err := parseMoment(v.str, false)
		if err != nil || (k == KindDate && m.prec > precDay) {
			return Value{}, false
		}
		return temporalValue(k, v.str, m.prec), true
	case KindDate:
		if k == KindDate || k == KindDateTime {
			v.kind = k
			return v, true
		}
	case KindDateTime:
		if k == KindDateTime {
			return v, true
		}
		if k == KindDate {
			m, err := parseMoment(v.str, false)
			if err != nil {
				return Value{}, false
			}
			n := min(len(v.str), 10)
			if m.prec < precDay {
				n = min(len(v.str), 7)
				if m.prec < precMonth {
					n = 4
				}
			}
			return temporalValue(KindDate, v.str[:n], min(m.prec, precDay)), true
		}
	case KindTime:
		if k == KindTime {
			return v, true
		}
	}
	return Value{}, false
}
