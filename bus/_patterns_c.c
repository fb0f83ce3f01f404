/* The optional compiled engine of bus/patterns_index.py: the event walk and the automaton
 * run of RuleIndex._match_python, over the same structures, with the same answers.
 *
 *   match(event, trie, n_paths, root) -> (rule ids, with repeats; set of "multi" path ids or None)
 *
 * trie:   tuple of (key, path id or -1, kids trie)                     (patterns_index._c_trie)
 * state:  a _State; this reads its `ctrans`: (rule ids ending there, then per field leaving it
 *         four items: path id, exact table, spec, _FieldIndex), spec being the tuple
 *         _FieldIndex.rebuild makes (S_* below); or (path id, exact table, None, None) when the
 *         exact table decides alone; or (path id, value, None, next state or states) when that
 *         table has one value (see patterns_index._c_transition).
 *
 * Exact values, prefixes, suffixes, ASCII case-insensitive forms, wildcards, numeric ranges
 * by boundaries, dotted-quad IPv4 blocks and anything-but of plain values, prefixes and
 * suffixes are probed here; everything else (other anything-but forms, non-ASCII case
 * folding, IPv6, ranges too many to segment, values that are not JSON scalars) is handed to
 * the Python probe functions in the spec, which append to a list like they do in Python.
 *
 * Every object this holds across a call that may run Python code is a strong reference, so
 * a misbehaving caller gets wrong answers at worst, never freed memory. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* The version of the layout of specs, trie nodes and transitions below; patterns_index
 * checks it (bump both together). */
#define LAYOUT 5

enum {
    S_EXACT, S_EXACT_ONLY, S_PRESENT, S_ABSENT,
    S_PREFIX, S_PREFIX_LENS, S_SUFFIX, S_SUFFIX_LENS,
    S_CI_EXACT, S_CI_PREFIX, S_CI_PREFIX_LENS, S_CI_SUFFIX, S_CI_SUFFIX_LENS,
    S_HAS_CI, S_PROBE_CI, S_BOUNDS, S_SEGMENTS, S_BOUNDS_DOUBLES, S_CIDR, S_PROBE_CIDR,
    S_WILD_HEAD_LENS, S_WILD, S_STR_FALLBACK, S_NUM_FALLBACK, S_OTHER_FALLBACK,
    S_NEGATIONS, S_PROBE_GENERIC, S_SIZE
};

static PyObject *TRUE_KEY, *FALSE_KEY;
/* _State and the offset of its `ctrans` slot (read directly: a getattr per state visited
 * was a tenth of the time). */
static PyTypeObject *StateType;
static Py_ssize_t ctrans_offset;

/* A growable array of strong references. */
typedef struct {
    PyObject **items;
    Py_ssize_t n, cap;
    PyObject *small[32];
} Vec;

static void vec_init(Vec *v) { v->items = v->small; v->n = 0; v->cap = 32; }

static int vec_push(Vec *v, PyObject *o) {
    if (v->n == v->cap) {
        Py_ssize_t cap = v->cap * 2;
        PyObject **items = PyMem_Malloc(cap * sizeof(PyObject *));
        if (items == NULL) { PyErr_NoMemory(); return -1; }
        memcpy(items, v->items, v->n * sizeof(PyObject *));
        if (v->items != v->small) PyMem_Free(v->items);
        v->items = items;
        v->cap = cap;
    }
    Py_INCREF(o);
    v->items[v->n++] = o;
    return 0;
}

static void vec_clear(Vec *v) {
    while (v->n > 0) { v->n--; Py_DECREF(v->items[v->n]); }
}

static void vec_free(Vec *v) {
    vec_clear(v);
    if (v->items != v->small) PyMem_Free(v->items);
    v->items = v->small;
    v->cap = 32;
}

/* ---- the event walk (patterns_index._walk / _walk_array) ------------------------------ */

static int add_multi(PyObject **multi, Py_ssize_t pid) {
    if (*multi == NULL && (*multi = PySet_New(NULL)) == NULL) return -1;
    PyObject *key = PyLong_FromSsize_t(pid);
    if (key == NULL) return -1;
    int r = PySet_Add(*multi, key);
    Py_DECREF(key);
    return r;
}

static int store(PyObject **flat, Py_ssize_t pid, PyObject *x) {
    PyObject *old = flat[pid];
    if (old == NULL) {
        Py_INCREF(x);
        flat[pid] = x;
        return 0;
    }
    if (PyList_CheckExact(old)) return PyList_Append(old, x);  /* lists in flat are our own */
    PyObject *pair = PyList_New(2);
    if (pair == NULL) return -1;
    Py_INCREF(x);
    PyList_SET_ITEM(pair, 0, old);  /* flat's reference moves into the list */
    PyList_SET_ITEM(pair, 1, x);
    flat[pid] = pair;
    return 0;
}

static inline PyObject *json_key(PyObject *x) {
    return x == Py_True ? TRUE_KEY : x == Py_False ? FALSE_KEY : x;
}

static int walk_object(PyObject *obj, PyObject *kids, PyObject **flat, Py_ssize_t n_paths,
                       PyObject **multi, int in_multi);

static int node_parts(PyObject *node, PyObject **key, Py_ssize_t *pid, PyObject **kids, Py_ssize_t n_paths) {
    if (!PyTuple_CheckExact(node) || PyTuple_GET_SIZE(node) != 3) {
        PyErr_SetString(PyExc_TypeError, "bad trie node");
        return -1;
    }
    *key = PyTuple_GET_ITEM(node, 0);
    *pid = PyLong_AsSsize_t(PyTuple_GET_ITEM(node, 1));
    *kids = PyTuple_GET_ITEM(node, 2);
    if (*pid == -1 && PyErr_Occurred()) return -1;
    if (*pid >= n_paths || *pid < -1 || !PyTuple_CheckExact(*kids)) {
        PyErr_SetString(PyExc_ValueError, "bad trie node");
        return -1;
    }
    return 0;
}

static int walk_array(PyObject *items, Py_ssize_t pid, PyObject *kids, PyObject **flat,
                      Py_ssize_t n_paths, PyObject **multi, int in_multi) {
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (pid >= 0 && !in_multi && flat[pid] == NULL) {
        /* The usual array: scalars only (tags, resources). */
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            PyObject *e = PyList_GET_ITEM(items, i);
            if (PyDict_CheckExact(e) || PyList_CheckExact(e) || PyBool_Check(e)) break;
        }
        if (i == n) {
            if (n > 0 && (flat[pid] = PyList_GetSlice(items, 0, n)) == NULL) return -1;
            return 0;
        }
    }
    int rc = -1;
    PyObject *objects = PyList_New(0), *scalars = PyList_New(0), *pending = PyList_New(0);
    if (objects == NULL || scalars == NULL || pending == NULL || PyList_Append(pending, items) < 0) goto done;
    while (PyList_GET_SIZE(pending) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(pending) - 1;
        PyObject *current = PyList_GET_ITEM(pending, last);
        Py_INCREF(current);
        if (PyList_SetSlice(pending, last, last + 1, NULL) < 0) { Py_DECREF(current); goto done; }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(current); i++) {
            PyObject *e = PyList_GET_ITEM(current, i);
            PyObject *target = PyDict_CheckExact(e) ? objects : PyList_CheckExact(e) ? pending : scalars;
            if (PyList_Append(target, target == scalars ? json_key(e) : e) < 0) { Py_DECREF(current); goto done; }
        }
        Py_DECREF(current);
    }
    if (PyList_GET_SIZE(scalars) > 0 && pid >= 0) {
        PyObject *old = flat[pid];
        if (old == NULL) {
            Py_INCREF(scalars);
            flat[pid] = scalars;
        } else if (PyList_CheckExact(old)) {
            Py_ssize_t end = PyList_GET_SIZE(old);
            if (PyList_SetSlice(old, end, end, scalars) < 0) goto done;
        } else {
            if (PyList_Insert(scalars, 0, old) < 0) goto done;
            flat[pid] = scalars;  /* flat's reference to `old` now lives in the list */
            Py_INCREF(scalars);
            Py_DECREF(old);
        }
        if (in_multi && add_multi(multi, pid) < 0) goto done;
    }
    Py_ssize_t n_objects = PyList_GET_SIZE(objects);
    if (n_objects > 0 && PyTuple_GET_SIZE(kids) > 0) {
        int nested = in_multi || n_objects > 1;
        for (Py_ssize_t i = 0; i < n_objects; i++)
            if (walk_object(PyList_GET_ITEM(objects, i), kids, flat, n_paths, multi, nested) < 0) goto done;
    }
    rc = 0;
done:
    Py_XDECREF(objects);
    Py_XDECREF(scalars);
    Py_XDECREF(pending);
    return rc;
}

static int walk_object(PyObject *obj, PyObject *kids, PyObject **flat, Py_ssize_t n_paths,
                       PyObject **multi, int in_multi) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kids); i++) {
        PyObject *key, *sub;
        Py_ssize_t pid;
        if (node_parts(PyTuple_GET_ITEM(kids, i), &key, &pid, &sub, n_paths) < 0) return -1;
        PyObject *v = PyDict_GetItemWithError(obj, key);
        if (v == NULL) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        if (PyDict_CheckExact(v)) {
            if (PyTuple_GET_SIZE(sub) > 0) {
                Py_INCREF(v);
                int r = walk_object(v, sub, flat, n_paths, multi, in_multi);
                Py_DECREF(v);
                if (r < 0) return -1;
            }
        } else if (PyList_CheckExact(v)) {
            Py_INCREF(v);
            int r = walk_array(v, pid, sub, flat, n_paths, multi, in_multi);
            Py_DECREF(v);
            if (r < 0) return -1;
        } else if (pid >= 0) {
            if (store(flat, pid, json_key(v)) < 0) return -1;
            if (in_multi && add_multi(multi, pid) < 0) return -1;
        }
    }
    return 0;
}

/* ---- probing one scalar against one field (the _FieldIndex._probe_* methods) ----------- */

static int push_hit(Vec *hits, PyObject *table, PyObject *key) {
    PyObject *hit = PyDict_GetItemWithError(table, key);  /* a non-empty tuple of states */
    if (hit == NULL) return PyErr_Occurred() ? -1 : 0;
    return vec_push(hits, hit);
}

/* Prefix, suffix and case-insensitive tables for this engine are keyed by the FNV-1a hash
 * of the key's code points (from the end for suffixes; patterns_index._affix_hashes), each
 * to a tuple of (key, payload). One pass over the value hashes all its prefixes (suffixes),
 * so probing a length costs no new string and no siphash; a candidate is then compared
 * character by character. `fold`: compare ASCII-lower-cased (v is ASCII, keys are lower
 * case). `whole`: only the full length (equals-ignore-case). `group`: the payload is a list
 * of (condition, states), all taken (ASCII values need no confirmation); otherwise states. */
#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

static inline Py_UCS4 folded(Py_UCS4 ch, int fold) {
    return (fold && ch >= 'A' && ch <= 'Z') ? ch + 32 : ch;
}

static int affix_equals(PyObject *key, PyObject *v, Py_ssize_t start, Py_ssize_t size, int fold) {
    if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) != size) return 0;
    int kk = PyUnicode_KIND(key), vk = PyUnicode_KIND(v);
    const void *kd = PyUnicode_DATA(key), *vd = PyUnicode_DATA(v);
    for (Py_ssize_t i = 0; i < size; i++)
        if (PyUnicode_READ(kk, kd, i) != folded(PyUnicode_READ(vk, vd, start + i), fold)) return 0;
    return 1;
}

static int probe_hashed(Vec *hits, PyObject *table, PyObject *lens, PyObject *v, int suffix, int fold,
                        int whole, int group) {
    if (PyDict_GET_SIZE(table) == 0) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v), hashed = 0;
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    uint64_t h = FNV_OFFSET;
    Py_ssize_t count = whole ? 1 : PyTuple_GET_SIZE(lens);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size = n;
        if (!whole) {
            size = PyLong_AsSsize_t(PyTuple_GET_ITEM(lens, i));
            if (size == -1 && PyErr_Occurred()) return -1;
            if (size > n) break;  /* lens are sorted; a longer key cannot match */
        }
        for (; hashed < size; hashed++) {
            h ^= folded(PyUnicode_READ(kind, data, suffix ? n - 1 - hashed : hashed), fold);
            h *= FNV_PRIME;
        }
        PyObject *key = PyLong_FromUnsignedLongLong(h);
        if (key == NULL) return -1;
        PyObject *candidates = PyDict_GetItemWithError(table, key);
        Py_DECREF(key);
        if (candidates == NULL) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        Py_INCREF(candidates);
        int rc = 0;
        for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(candidates) && rc == 0; c++) {
            PyObject *entry = PyTuple_GET_ITEM(candidates, c);
            if (!affix_equals(PyTuple_GET_ITEM(entry, 0), v, suffix ? n - size : 0, size, fold)) continue;
            PyObject *payload = PyTuple_GET_ITEM(entry, 1);
            if (!group) {
                rc = vec_push(hits, payload);
            } else {
                for (Py_ssize_t g = 0; g < PyList_GET_SIZE(payload) && rc == 0; g++)
                    rc = vec_push(hits, PyTuple_GET_ITEM(PyList_GET_ITEM(payload, g), 1));
            }
        }
        Py_DECREF(candidates);
        if (rc < 0) return -1;
    }
    return 0;
}

static int call_probe(PyObject *probe, PyObject *field, PyObject *v, PyObject **pyhits) {
    if (*pyhits == NULL && (*pyhits = PyList_New(0)) == NULL) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(probe, field, v, *pyhits, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int call_probes(PyObject *probes, PyObject *field, PyObject *v, PyObject **pyhits) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(probes); i++)
        if (call_probe(PyTuple_GET_ITEM(probes, i), field, v, pyhits) < 0) return -1;
    return 0;
}

/* A string of ASCII digits and dots: 1 and *address if it is an IPv4 address the way
 * patterns_ops.parse_ip reads one (four decimal octets, leading zeros allowed), 0 if it is
 * not an address. -1: not only digits and dots, so parse_ip must decide. */
static int parse_ipv4(PyObject *v, uint32_t *address) {
    if (!PyUnicode_IS_ASCII(v)) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(v);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(s[i] == '.' || (s[i] >= '0' && s[i] <= '9'))) return -1;
    uint32_t value = 0;
    int octets = 0;
    Py_ssize_t i = 0;
    while (i <= n) {
        if (i == n || s[i] == '.') return 0;  /* an empty octet */
        unsigned octet = 0;
        while (i < n && s[i] != '.') {
            octet = octet * 10 + (s[i] - '0');
            if (octet > 255) return 0;
            i++;
        }
        value = value << 8 | octet;
        octets++;
        if (i == n) break;
        i++;  /* the dot */
    }
    if (octets != 4) return 0;
    *address = value;
    return 1;
}

static int probe_cidr(Vec *hits, PyObject *spec, PyObject *field, PyObject *v, PyObject **pyhits) {
    PyObject *blocks = PyTuple_GET_ITEM(spec, S_CIDR);
    uint32_t address;
    int parsed = parse_ipv4(v, &address);
    if (parsed == 0) return 0;
    if (parsed < 0) {  /* IPv6, or nothing: parse_ip and the Python probe decide */
        if (PyUnicode_FindChar(v, ':', 0, PyUnicode_GET_LENGTH(v), 1) < 0) return 0;
        return call_probe(PyTuple_GET_ITEM(spec, S_PROBE_CIDR), field, v, pyhits);
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(blocks); i++) {
        PyObject *block = PyTuple_GET_ITEM(blocks, i);  /* (version, shift, table) */
        long version = PyLong_AsLong(PyTuple_GET_ITEM(block, 0));
        long shift = PyLong_AsLong(PyTuple_GET_ITEM(block, 1));
        if ((version == -1 || shift == -1) && PyErr_Occurred()) return -1;
        if (version != 4 || shift < 0 || shift > 32) continue;
        PyObject *network = PyLong_FromUnsignedLongLong((uint64_t)address >> shift);
        if (network == NULL) return -1;
        int r = push_hit(hits, PyTuple_GET_ITEM(block, 2), network);
        Py_DECREF(network);
        if (r < 0) return -1;
    }
    return 0;
}

/* v as a double when that is exact (every float; ints up to 2**53). */
static int exact_double(PyObject *v, double *d) {
    if (PyFloat_CheckExact(v)) {
        *d = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow || x > (1LL << 53) || x < -(1LL << 53)) return 0;
    *d = (double)x;
    return 1;
}

static int probe_ranges(Vec *hits, PyObject *spec, PyObject *v) {
    PyObject *bounds = PyTuple_GET_ITEM(spec, S_BOUNDS);
    if (bounds == Py_None) return 0;  /* scanned by the Python _probe_ranges instead */
    Py_INCREF(bounds);
    int rc = -1;
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(bounds), n = hi;
    PyObject *packed = PyTuple_GET_ITEM(spec, S_BOUNDS_DOUBLES);
    double d;
    int fast = packed != Py_None && PyBytes_GET_SIZE(packed) == n * (Py_ssize_t)sizeof(double);
    if (fast && (fast = exact_double(v, &d)) < 0) goto done;
    if (fast) {
        /* The same bisect_left on exact doubles (NaN compares like in Python: never less). */
        const char *b = PyBytes_AS_STRING(packed);
        double bound;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            memcpy(&bound, b + mid * sizeof(double), sizeof(double));
            if (bound < d) lo = mid + 1; else hi = mid;
        }
        Py_ssize_t cell = 2 * lo;
        if (lo < n) {
            memcpy(&bound, b + lo * sizeof(double), sizeof(double));
            cell += bound == d;
        }
        PyObject *segments = PyTuple_GET_ITEM(spec, S_SEGMENTS);
        if (cell >= PyList_GET_SIZE(segments)) { PyErr_SetString(PyExc_IndexError, "segment"); goto done; }
        PyObject *states = PyList_GET_ITEM(segments, cell);
        rc = PyTuple_GET_SIZE(states) ? vec_push(hits, states) : 0;
        goto done;
    }
    while (lo < hi) {  /* bisect_left */
        Py_ssize_t mid = (lo + hi) / 2;
        int less = PyObject_RichCompareBool(PyList_GET_ITEM(bounds, mid), v, Py_LT);
        if (less < 0) goto done;
        if (less) lo = mid + 1; else hi = mid;
    }
    Py_ssize_t cell = 2 * lo;
    if (lo < n) {
        int equal = PyObject_RichCompareBool(PyList_GET_ITEM(bounds, lo), v, Py_EQ);
        if (equal < 0) goto done;
        if (equal) cell += 1;
    }
    PyObject *segments = PyTuple_GET_ITEM(spec, S_SEGMENTS);
    if (cell >= PyList_GET_SIZE(segments)) { PyErr_SetString(PyExc_IndexError, "segment"); goto done; }
    PyObject *states = PyList_GET_ITEM(segments, cell);
    rc = PyTuple_GET_SIZE(states) ? vec_push(hits, states) : 0;
done:
    Py_DECREF(bounds);
    return rc;
}

/* patterns_ops.wildcard_match: the glob's literal segments (head, middles..., tail; at least
 * two), `*` between them. v is known to start with the head and end with the tail. Taking
 * each middle at its leftmost place is optimal for `*`-only globs. */
static int glob_match(PyObject *v, PyObject *segments) {
    Py_ssize_t k = PyTuple_GET_SIZE(segments), n = PyUnicode_GET_LENGTH(v);
    if (k < 2) return 0;
    Py_ssize_t pos = PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(segments, 0));
    Py_ssize_t end = n - PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(segments, k - 1));
    if (end < pos) return 0;
    for (Py_ssize_t i = 1; i < k - 1; i++) {
        PyObject *middle = PyTuple_GET_ITEM(segments, i);
        Py_ssize_t found = PyUnicode_Find(v, middle, pos, end, 1);
        if (found == -2) return -1;
        if (found < 0) return 0;
        pos = found + PyUnicode_GET_LENGTH(middle);
    }
    return 1;
}

/* _FieldIndex._probe_wildcard: candidates by literal head, then tail; each confirmed. */
static int probe_wildcard(Vec *hits, PyObject *spec, PyObject *v) {
    PyObject *head_lens = PyTuple_GET_ITEM(spec, S_WILD_HEAD_LENS), *wild = PyTuple_GET_ITEM(spec, S_WILD);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(head_lens); i++) {
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(head_lens, i));
        if (size == -1 && PyErr_Occurred()) return -1;
        if (size > n) break;
        PyObject *head = PyUnicode_Substring(v, 0, size);
        if (head == NULL) return -1;
        PyObject *entry = PyDict_GetItemWithError(wild, head);  /* (tail lens, {tail: group}) */
        Py_DECREF(head);
        if (entry == NULL) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        Py_INCREF(entry);
        int rc = 0;
        PyObject *tail_lens = PyTuple_GET_ITEM(entry, 0), *tails = PyTuple_GET_ITEM(entry, 1);
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(tail_lens) && rc == 0; j++) {
            Py_ssize_t tail_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(tail_lens, j));
            if (tail_size == -1 && PyErr_Occurred()) { rc = -1; break; }
            if (tail_size > n) break;
            PyObject *tail = PyUnicode_Substring(v, n - tail_size, n);
            if (tail == NULL) { rc = -1; break; }
            PyObject *group = PyDict_GetItemWithError(tails, tail);  /* ((segments, states), ...) */
            Py_DECREF(tail);
            if (group == NULL) {
                if (PyErr_Occurred()) rc = -1;
                continue;
            }
            Py_INCREF(group);
            for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(group) && rc == 0; g++) {
                PyObject *item = PyTuple_GET_ITEM(group, g);
                int m = glob_match(v, PyTuple_GET_ITEM(item, 0));
                if (m < 0) rc = -1;
                else if (m) rc = vec_push(hits, PyTuple_GET_ITEM(item, 1));
            }
            Py_DECREF(group);
        }
        Py_DECREF(entry);
        if (rc < 0) return -1;
    }
    return 0;
}

/* anything-but conditions of plain values, prefixes and suffixes (patterns_index._c_negation):
 * (values, prefixes, suffixes, states) each; a value none of them names is accepted. */
static int probe_negations(Vec *hits, PyObject *negations, PyObject *v) {
    int is_str = PyUnicode_CheckExact(v);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(negations); i++) {
        PyObject *entry = PyTuple_GET_ITEM(negations, i);
        PyObject *values = PyTuple_GET_ITEM(entry, 0);
        int excluded = PySet_GET_SIZE(values) > 0 ? PySet_Contains(values, v) : 0;
        for (int side = 0; side < 2 && is_str && !excluded; side++) {
            PyObject *affixes = PyTuple_GET_ITEM(entry, 1 + side);
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(affixes) && !excluded; j++)
                excluded = (int)PyUnicode_Tailmatch(v, PyTuple_GET_ITEM(affixes, j), 0, PY_SSIZE_T_MAX,
                                                    side ? 1 : -1);
        }
        if (excluded < 0) return -1;
        if (!excluded && vec_push(hits, PyTuple_GET_ITEM(entry, 3)) < 0) return -1;
    }
    return 0;
}

/* The generic conditions: anything-but here when v is a JSON scalar, the rest in Python
 * (and all of them in Python for any other object a caller put in an event). */
static int probe_generic(Vec *hits, PyObject *spec, PyObject *field, PyObject *v, PyObject **pyhits,
                         int fallback) {
    PyObject *negations = PyTuple_GET_ITEM(spec, S_NEGATIONS);
    if (PyTuple_GET_SIZE(negations) > 0) {
        int plain = PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v)
                    || v == Py_None || v == TRUE_KEY || v == FALSE_KEY;
        if (!plain) return call_probe(PyTuple_GET_ITEM(spec, S_PROBE_GENERIC), field, v, pyhits);
        if (probe_negations(hits, negations, v) < 0) return -1;
    }
    return call_probes(PyTuple_GET_ITEM(spec, fallback), field, v, pyhits);
}

static int probe_scalar(Vec *hits, PyObject *spec, PyObject *field, PyObject *v, PyObject **pyhits) {
    if (push_hit(hits, PyTuple_GET_ITEM(spec, S_EXACT), v) < 0) return -1;
    if (PyUnicode_CheckExact(v)) {
        if (probe_hashed(hits, PyTuple_GET_ITEM(spec, S_PREFIX), PyTuple_GET_ITEM(spec, S_PREFIX_LENS), v, 0, 0, 0, 0) < 0
            || probe_hashed(hits, PyTuple_GET_ITEM(spec, S_SUFFIX), PyTuple_GET_ITEM(spec, S_SUFFIX_LENS), v, 1, 0, 0, 0) < 0)
            return -1;
        if (PyTuple_GET_ITEM(spec, S_HAS_CI) == Py_True) {
            if (!PyUnicode_IS_ASCII(v)) {
                if (call_probe(PyTuple_GET_ITEM(spec, S_PROBE_CI), field, v, pyhits) < 0) return -1;
            } else if (probe_hashed(hits, PyTuple_GET_ITEM(spec, S_CI_EXACT), NULL, v, 0, 1, 1, 1) < 0
                       || probe_hashed(hits, PyTuple_GET_ITEM(spec, S_CI_PREFIX),
                                       PyTuple_GET_ITEM(spec, S_CI_PREFIX_LENS), v, 0, 1, 0, 1) < 0
                       || probe_hashed(hits, PyTuple_GET_ITEM(spec, S_CI_SUFFIX),
                                       PyTuple_GET_ITEM(spec, S_CI_SUFFIX_LENS), v, 1, 1, 0, 1) < 0) {
                return -1;
            }
        }
        if (PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, S_CIDR)) > 0 && probe_cidr(hits, spec, field, v, pyhits) < 0)
            return -1;
        if (PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, S_WILD_HEAD_LENS)) > 0 && probe_wildcard(hits, spec, v) < 0)
            return -1;
        return probe_generic(hits, spec, field, v, pyhits, S_STR_FALLBACK);
    }
    if (PyLong_CheckExact(v) || PyFloat_CheckExact(v)) {
        if (probe_ranges(hits, spec, v) < 0) return -1;
        return probe_generic(hits, spec, field, v, pyhits, S_NUM_FALLBACK);
    }
    return probe_generic(hits, spec, field, v, pyhits, S_OTHER_FALLBACK);
}

/* ---- the automaton run (RuleIndex._match_python) ---------------------------------------- */

/* The states still to run. With thousands of rules they are scattered over a large heap
 * and each is a cache miss, so pushing one does not touch it: the stack holds borrowed
 * pointers, kept alive by strong references to the tuples (or states) they came from in
 * `keep`, and asks the CPU to fetch the state's slot meanwhile. */
typedef struct {
    Vec states;  /* borrowed */
    Vec keep;    /* owned */
} Stack;

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((const void *)(p))
#else
#define PREFETCH(p) ((void)(p))
#endif

static int stack_add(Stack *stack, PyObject *state) {  /* `state` must be kept alive */
    Vec *v = &stack->states;
    if (v->n == v->cap) {  /* grow as vec_push does, without a new reference */
        if (vec_push(v, state) < 0) return -1;
        Py_DECREF(state);
    } else {
        v->items[v->n++] = state;
    }
    PREFETCH((char *)state + ctrans_offset);
    return 0;
}

static int push_states(Stack *stack, PyObject *states) {
    if (!PyTuple_CheckExact(states)) {
        PyErr_SetString(PyExc_TypeError, "states must be a tuple");
        return -1;
    }
    if (PyTuple_GET_SIZE(states) == 0) return 0;
    if (vec_push(&stack->keep, states) < 0) return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(states); i++)
        if (stack_add(stack, PyTuple_GET_ITEM(states, i)) < 0) return -1;
    return 0;
}

/* Push the states of all hits, each once (a state is reached twice only through one field). */
static int push_unique(Stack *stack, Vec *hits) {
    if (hits->n == 1) return push_states(stack, hits->items[0]);
    Py_ssize_t base = stack->states.n, total = 0;
    for (Py_ssize_t h = 0; h < hits->n; h++) {
        if (!PyTuple_CheckExact(hits->items[h])) {
            PyErr_SetString(PyExc_TypeError, "states must be a tuple");
            return -1;
        }
        total += PyTuple_GET_SIZE(hits->items[h]);
        if (vec_push(&stack->keep, hits->items[h]) < 0) return -1;
    }
    PyObject *seen = NULL;
    if (total > 48 && (seen = PySet_New(NULL)) == NULL) return -1;
    for (Py_ssize_t h = 0; h < hits->n; h++) {
        PyObject *states = hits->items[h];
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(states); i++) {
            PyObject *s = PyTuple_GET_ITEM(states, i);
            int dup = 0;
            if (seen != NULL) {
                dup = PySet_Contains(seen, s);
                if (dup == 0 && PySet_Add(seen, s) < 0) dup = -1;
                if (dup < 0) { Py_DECREF(seen); return -1; }
            } else {
                for (Py_ssize_t j = base; j < stack->states.n; j++)
                    if (stack->states.items[j] == s) { dup = 1; break; }
            }
            if (!dup && stack_add(stack, s) < 0) { Py_XDECREF(seen); return -1; }
        }
    }
    Py_XDECREF(seen);
    return 0;
}

static PyObject *state_slot(PyObject *state, Py_ssize_t offset) {
    if (Py_TYPE(state) != StateType) {
        PyErr_SetString(PyExc_TypeError, "expected a _State");
        return NULL;
    }
    PyObject *value = *(PyObject **)((char *)state + offset);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_State slot not set");
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* Whether a dict holding the key k finds it for v: what dict.get does, for one key. */
static int key_equals(PyObject *k, PyObject *v) {
    if (k == v) return 1;
    if (PyUnicode_CheckExact(k) && PyUnicode_CheckExact(v)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(k);
        return n == PyUnicode_GET_LENGTH(v) && PyUnicode_KIND(k) == PyUnicode_KIND(v)
               && memcmp(PyUnicode_DATA(k), PyUnicode_DATA(v), n * PyUnicode_KIND(k)) == 0;
    }
    Py_hash_t hv = PyObject_Hash(v);
    if (hv == -1) return -1;  /* unhashable: the lookup raises too */
    Py_hash_t hk = PyObject_Hash(k);
    if (hk == -1) return -1;
    if (hk != hv) return 0;
    return PyObject_RichCompareBool(k, v, Py_EQ);
}

static int run_state(PyObject *state, PyObject **flat, Py_ssize_t n_paths, PyObject *multi,
                     PyObject *found, Stack *stack, Vec *hits, PyObject **pyhits) {
    PyObject *ctrans = state_slot(state, ctrans_offset);
    if (ctrans == NULL) return -1;
    int rc = -1;
    if (!PyTuple_CheckExact(ctrans) || PyTuple_GET_SIZE(ctrans) % 4 != 1
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(ctrans, 0))) {
        PyErr_SetString(PyExc_TypeError, "bad ctrans");
        goto done;
    }
    PyObject *rules = PyTuple_GET_ITEM(ctrans, 0);
    if (PyTuple_GET_SIZE(rules) > 0) {
        Py_ssize_t end = PyList_GET_SIZE(found);
        if (PyList_SetSlice(found, end, end, rules) < 0) goto done;
    }
    for (Py_ssize_t t = 1; t < PyTuple_GET_SIZE(ctrans); t += 4) {
        Py_ssize_t pid = PyLong_AsSsize_t(PyTuple_GET_ITEM(ctrans, t));
        if (pid == -1 && PyErr_Occurred()) goto done;
        PyObject *exact = PyTuple_GET_ITEM(ctrans, t + 1), *spec = PyTuple_GET_ITEM(ctrans, t + 2);
        PyObject *field = PyTuple_GET_ITEM(ctrans, t + 3);
        if (pid < 0 || pid >= n_paths
            || (spec != Py_None && (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != S_SIZE
                                    || !PyDict_CheckExact(exact)))) {
            PyErr_SetString(PyExc_ValueError, "bad transition");
            goto done;
        }
        PyObject *v = flat[pid];
        if (spec == Py_None && !PyDict_CheckExact(exact)) {  /* one value, one target */
            if (v == NULL) continue;
            int any = 0;
            if (PyList_CheckExact(v)) {
                for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v) && !any; i++)
                    if ((any = key_equals(exact, PyList_GET_ITEM(v, i))) < 0) goto done;
            } else if ((any = key_equals(exact, v)) < 0) {
                goto done;
            }
            if (any && Py_TYPE(field) == StateType) {
                if (vec_push(&stack->keep, field) < 0 || stack_add(stack, field) < 0) goto done;
            } else if (any && push_states(stack, field) < 0) {
                goto done;
            }
            continue;
        }
        if (spec == Py_None) {  /* equality only, no absence branch: one lookup decides */
            if (v == NULL) continue;
            if (!PyList_CheckExact(v)) {
                PyObject *hit = PyDict_GetItemWithError(exact, v);
                if (hit == NULL) {
                    if (PyErr_Occurred()) goto done;
                } else if (push_states(stack, hit) < 0) {
                    goto done;
                }
                continue;
            }
            vec_clear(hits);
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++)
                if (push_hit(hits, exact, PyList_GET_ITEM(v, i)) < 0) goto done;
            if (hits->n > 0 && push_unique(stack, hits) < 0) goto done;
            continue;
        }
        PyObject *absent = PyTuple_GET_ITEM(spec, S_ABSENT), *present = PyTuple_GET_ITEM(spec, S_PRESENT);
        if (v == NULL) {
            if (push_states(stack, absent) < 0) goto done;
            continue;
        }
        vec_clear(hits);
        if (PyTuple_GET_SIZE(present) && vec_push(hits, present) < 0) goto done;
        if (PyList_CheckExact(v)) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++)
                if (probe_scalar(hits, spec, field, PyList_GET_ITEM(v, i), pyhits) < 0) goto done;
        } else if (probe_scalar(hits, spec, field, v, pyhits) < 0) {
            goto done;
        }
        if (*pyhits != NULL && PyList_GET_SIZE(*pyhits) > 0) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(*pyhits); i++)
                if (vec_push(hits, PyList_GET_ITEM(*pyhits, i)) < 0) goto done;
            if (PyList_SetSlice(*pyhits, 0, PyList_GET_SIZE(*pyhits), NULL) < 0) goto done;
        }
        if (multi != NULL && PyTuple_GET_SIZE(absent) > 0) {
            /* Under an array of objects one element may lack the field even though another
             * has it: follow the absence branch and let the exact evaluator decide. */
            PyObject *key = PyLong_FromSsize_t(pid);
            if (key == NULL) goto done;
            int in = PySet_Contains(multi, key);
            Py_DECREF(key);
            if (in < 0 || (in && vec_push(hits, absent) < 0)) goto done;
        }
        if (hits->n > 0 && push_unique(stack, hits) < 0) goto done;
    }
    rc = 0;
done:
    Py_DECREF(ctrans);
    return rc;
}

static PyObject *match(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "match(event, trie, n_paths, root)");
        return NULL;
    }
    PyObject *event = args[0], *trie = args[1], *root = args[3];
    Py_ssize_t n_paths = PyLong_AsSsize_t(args[2]);
    if (n_paths == -1 && PyErr_Occurred()) return NULL;
    if (TRUE_KEY == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call setup(...) first");
        return NULL;
    }
    if (!PyDict_CheckExact(event) || !PyTuple_CheckExact(trie) || n_paths < 0) {
        PyErr_SetString(PyExc_TypeError, "match(event: dict, trie: tuple, n_paths: int >= 0, root)");
        return NULL;
    }
    PyObject **flat = PyMem_Calloc(n_paths ? n_paths : 1, sizeof(PyObject *));
    if (flat == NULL) return PyErr_NoMemory();
    PyObject *multi = NULL, *found = NULL, *pyhits = NULL, *result = NULL;
    Stack stack;
    Vec hits;
    vec_init(&stack.states);
    vec_init(&stack.keep);
    vec_init(&hits);
    if (walk_object(event, trie, flat, n_paths, &multi, 0) < 0) goto done;
    if ((found = PyList_New(0)) == NULL || vec_push(&stack.keep, root) < 0 || stack_add(&stack, root) < 0)
        goto done;
    while (stack.states.n > 0) {
        PyObject *state = stack.states.items[--stack.states.n];  /* alive through stack.keep */
        if (stack.states.n > 0) {  /* the next state's slot is (being) fetched: fetch its ctrans */
            PyObject *next = stack.states.items[stack.states.n - 1];
            if (Py_TYPE(next) == StateType) PREFETCH(*(PyObject **)((char *)next + ctrans_offset));
        }
        if (run_state(state, flat, n_paths, multi, found, &stack, &hits, &pyhits) < 0) goto done;
    }
    result = PyTuple_Pack(2, found, multi ? multi : Py_None);
done:
    stack.states.n = 0;  /* borrowed: nothing to release */
    vec_free(&stack.states);
    vec_free(&stack.keep);
    vec_free(&hits);
    for (Py_ssize_t i = 0; i < n_paths; i++) Py_XDECREF(flat[i]);
    PyMem_Free(flat);
    Py_XDECREF(multi);
    Py_XDECREF(found);
    Py_XDECREF(pyhits);
    return result;
}

static int slot_offset(PyObject *descr, PyTypeObject *type, Py_ssize_t *offset) {
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || PyDescr_TYPE(descr) != type
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "expected a __slots__ member of the state type");
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    return 0;
}

static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *t, *f, *ctrans;
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "OOO!O", &t, &f, &PyType_Type, &type, &ctrans)) return NULL;
    if (slot_offset(ctrans, type, &ctrans_offset) < 0) return NULL;
    Py_INCREF(t);
    Py_INCREF(f);
    Py_INCREF(type);
    Py_XSETREF(TRUE_KEY, t);
    Py_XSETREF(FALSE_KEY, f);
    Py_XSETREF(StateType, type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"match", (PyCFunction)(void (*)(void))match, METH_FASTCALL,
     "match(event, trie, n_paths, root) -> (rule ids, multi path ids or None)"},
    {"setup", setup, METH_VARARGS,
     "setup(TRUE_KEY, FALSE_KEY, _State, _State.ctrans): the keys booleans are stored as, the state type"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "bus._patterns_c",
    "Compiled event walk and automaton run for bus.patterns_index (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__patterns_c(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    /* patterns_index uses this module only if it expects the same layout: a stale build
     * of an older layout is ignored rather than misread. */
    if (PyModule_AddIntConstant(module, "LAYOUT", LAYOUT) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
