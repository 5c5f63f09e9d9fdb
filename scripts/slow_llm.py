# A slow OpenAI-compatible chat endpoint (2 s per answer) for measuring that adds do not wait for it.
import json, time, http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers['content-length'])))
        time.sleep(2.0)
        last = body['messages'][-1]['content']
        if last.startswith('Existing memories:'):
            ans = '{"event": "ADD", "reason": "new"}'
        else:
            facts = [l.split(': ', 1)[1] for l in last.splitlines() if ': ' in l and not l.startswith('Date:')]
            ans = json.dumps({"facts": facts})
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": ans}}],
                          "usage": {"prompt_tokens": 50, "completion_tokens": 10}}).encode()
        self.send_response(200); self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(out))); self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(('127.0.0.1', 8391), H).serve_forever()
