"""A DCE/RPC server for one named pipe of the lab's Samba, for the
interfaces Samba has no server for (task scheduler, MS-EFSR, DFS, FSRVP,
spooler): smbd connects a client's open of \\pipe\\NAME to the unix
socket ncalrpc dir/np/NAME (before asking samba-dcerpcd), so a listener
there answers it. It speaks the named pipe auth handshake (Samba's
named_pipe_auth_req/rep, level 7, message mode: each PDU behind a 2-byte
length), accepts every BIND context (with an NTLMSSP CHALLENGE when the
BIND carries NTLMSSP, as impacket's PKT_PRIVACY binding does; AUTH3 is not
checked) and answers every REQUEST with a FAULT (access denied): a client's
calls go on the wire and nothing runs. One exception: on spoolss, a
sealed RpcOpenPrinter(Ex) gets a (meaningless) printer handle, sealed with
the keys derived from the client's NTLMv2 AUTHENTICATE and the account's
password (environment NP_RESPONDER_PASSWORD), so the printer bug's next
call, the one that matters, is sent. Each connection is served by its own
thread.

Usage: np_responder.py SOCKET PIPE (with a python that imports impacket).
Prints "ready" once listening, then one line per PDU received."""
import calendar, os, socket, struct, sys, threading, time
from Cryptodome.Cipher import ARC4
from impacket import ntlm

def recvn(c, n):
    b = b''
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b

def challenge(negotiate, st):
    neg = ntlm.NTLMAuthNegotiate()
    neg.fromString(negotiate)
    f = neg['flags']
    ans = 0
    for bit in (ntlm.NTLMSSP_NEGOTIATE_56, ntlm.NTLMSSP_NEGOTIATE_128, ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH,
                ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY, ntlm.NTLMSSP_NEGOTIATE_UNICODE,
                ntlm.NTLMSSP_NEGOTIATE_SIGN, ntlm.NTLMSSP_NEGOTIATE_SEAL, ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN):
        if f & bit:
            ans |= bit
    ans |= (ntlm.NTLMSSP_NEGOTIATE_VERSION | ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO
            | ntlm.NTLMSSP_TARGET_TYPE_SERVER | ntlm.NTLMSSP_NEGOTIATE_NTLM | ntlm.NTLMSSP_REQUEST_TARGET)
    av = ntlm.AV_PAIRS()
    av[ntlm.NTLMSSP_AV_DOMAINNAME] = av[ntlm.NTLMSSP_AV_DNS_DOMAINNAME] = 'LAB'.encode('utf-16le')
    av[ntlm.NTLMSSP_AV_HOSTNAME] = av[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = 'SRV'.encode('utf-16le')
    av[ntlm.NTLMSSP_AV_TIME] = struct.pack('<q', 116444736000000000 + calendar.timegm(time.gmtime()) * 10000000)
    m = ntlm.NTLMAuthChallenge()
    dom = 'LAB'.encode('utf-16le')
    m['flags'] = ans
    m['domain_len'] = m['domain_max_len'] = len(dom)
    m['domain_offset'] = 40 + 16
    m['challenge'] = st['challenge'] = os.urandom(8)
    m['domain_name'] = dom
    m['TargetInfoFields_len'] = m['TargetInfoFields_max_len'] = len(av)
    m['TargetInfoFields'] = av
    m['TargetInfoFields_offset'] = 40 + 16 + len(dom)
    m['Version'] = b'\xff' * 8
    m['VersionLen'] = 8
    return m.getData()

def pdu(ptype, call_id, body, auth=b'', trailer=b''):
    if auth:
        pad = (-(16 + len(body))) % 4
        body += b'\0' * pad
        trailer = trailer[:2] + bytes([pad]) + trailer[3:]
    frag = 16 + len(body) + len(trailer) + len(auth)
    return struct.pack('<BBBBIHHI', 5, 0, ptype, 3, 0x10, frag, len(auth), call_id) + body + trailer + auth

# MS-RPRN RpcOpenPrinter, RpcOpenPrinterEx.
OPEN_PRINTER = (1, 69)

def keys(auth3, st):
    """The server's sealing state from the client's AUTHENTICATE (NTLMv2,
    MS-NLMP 3.3.2, 3.4.5), when the account's password is known
    (NP_RESPONDER_PASSWORD)."""
    password = os.environ.get('NP_RESPONDER_PASSWORD')
    m = ntlm.NTLMAuthChallengeResponse()
    m.fromString(auth3)
    if password is None or len(m['ntlm']) <= 24 or 'challenge' not in st:
        return
    user, domain = m['user_name'].decode('utf-16le'), m['domain_name'].decode('utf-16le')
    base = ntlm.hmac_md5(ntlm.NTOWFv2(user, password, domain), m['ntlm'][:16])
    f = m['flags']
    exported = ARC4.new(base).decrypt(m['session_key']) if f & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH else base
    st['flags'], st['seq'] = f, 0
    st['sign'] = ntlm.SIGNKEY(f, exported, 'Server')
    st['sealkey'] = ntlm.SEALKEY(f, exported, 'Server')
    st['seal'] = ARC4.new(st['sealkey']).encrypt

def answer(p, pipe, st):
    ptype, frag, auth_len, call_id = p[2], struct.unpack_from('<H', p, 8)[0], struct.unpack_from('<H', p, 10)[0], struct.unpack_from('<I', p, 12)[0]
    auth = p[frag - auth_len:frag] if auth_len else b''
    trailer = p[frag - auth_len - 8:frag - auth_len] if auth_len else b''
    if ptype in (11, 14):  # BIND, ALTER_CONTEXT
        n = p[24]
        sec = ('\\PIPE\\' + pipe + '\0').encode()
        body = struct.pack('<HHI', 4280, 4280, 0x53f0) + struct.pack('<H', len(sec)) + sec
        body += b'\0' * ((-(16 + len(body))) % 4)
        body += struct.pack('<BBH', n, 0, 0)
        at = 28
        for _ in range(n):
            transfers = p[at + 2]
            body += struct.pack('<HH', 0, 0) + p[at + 24:at + 44]
            at += 24 + 20 * transfers
        ntlm_ch = challenge(auth, st) if auth.startswith(b'NTLMSSP\0') else b''
        return pdu(12 if ptype == 11 else 15, call_id, body, ntlm_ch, trailer if ntlm_ch else b'')
    if ptype == 16 and auth.startswith(b'NTLMSSP\0'):  # AUTH3
        try:
            keys(auth, st)
        except Exception as e:  # no keys: calls are faulted, as before
            print('no sealing keys:', repr(e), flush=True)
        return None
    opnum = struct.unpack_from('<H', p, 22)[0] if ptype == 0 else None
    if pipe.lower() == 'spoolss' and opnum in OPEN_PRINTER and 'seal' in st and auth_len:
        # The printer bug opens the print server before asking it for
        # change notifications: a (meaningless) handle, sealed (Coercer
        # binds at PKT_PRIVACY), so the next call goes on the wire.
        stub = struct.pack('<I', 0) + os.urandom(16) + struct.pack('<I', 0)
        body = struct.pack('<IHBB', len(stub), struct.unpack_from('<H', p, 20)[0], 0, 0)
        frag = 16 + len(body) + len(stub) + 8 + 16
        head = struct.pack('<BBBBIHHI', 5, 0, 2, 3, 0x10, frag, 16, call_id) + body
        tail = struct.pack('<BBBBI', 10, 6, 0, 0, struct.unpack_from('<I', trailer, 4)[0])
        sealed, sig = ntlm.SEAL(st['flags'], st['sign'], st['sealkey'], head + stub + tail, stub, st['seq'], st['seal'])
        st['seq'] += 1
        return head + sealed + tail + sig.getData()
    if ptype == 0:  # REQUEST: a FAULT, status 5 (access denied)
        return pdu(3, call_id, struct.pack('<IHBBI', 0, 0, 0, 0, 5) + b'\0' * 4)
    return None  # AUTH3 and the rest: no answer

def serve(path, pipe):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    print('ready', flush=True)
    while True:
        c, _ = s.accept()
        # One thread per connection: a client may keep a pipe open while
        # it opens the next (Coercer does), and smbd's open of that next
        # one waits for this handshake.
        threading.Thread(target=session, args=(c, pipe), daemon=True).start()

def session(c, pipe):
    st = {}  # this connection's NTLMSSP state
    try:
        req = recvn(c, struct.unpack('>I', recvn(c, 4))[0])
        level = struct.unpack_from('<I', req, 4)[0]
        rep = b'NPAM' + struct.pack('<II', level, level) + struct.pack('<HHIQ', 2, 0x05ff, 0, 4096) + struct.pack('<I', 0)
        c.sendall(struct.pack('>I', len(rep)) + rep)
        buf = b''
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
            # Message mode: each message comes with a 2-byte length.
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from('<H', buf)[0]:
                n = struct.unpack_from('<H', buf)[0]
                msg, buf = buf[2:2 + n], buf[2 + n:]
                print('pdu type', msg[2], 'len', len(msg), flush=True)
                out = answer(msg, pipe, st)
                if out:
                    c.sendall(struct.pack('<H', len(out)) + out)
    except Exception as e:
        print('err', repr(e), flush=True)
    c.close()

serve(sys.argv[1], sys.argv[2])
