// Peer URLs read as etcd 3.4.23 reads them (types.NewURLs over Go 1.19's url.Parse): the text
// Go prints back, which member ids hash, and the errors for bad URLs. The expected values are
// etcd's own (`etcdctl member list -w json` of a member advertising these URLs, and its errors);
// ids.test.ts checks the same URLs against a running etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { UrlError, goQuote, goQuoteList, goTrimSpace, isGoIp, parsePeerUrls, splitHostPort } from '../../src/membership/urls';

describe('peer URLs', () => {
  test("normalized as etcd prints them, sorted as Go sorts strings", () => {
    const typed = ['http://[::1]:34701', 'http://127.0.0.1:34702?x=1&y', 'unix://sock:1', 'http://h%C3%A9:1', 'http://hé:2', 'http://a:1#',
      'http://a:3#a b', 'https://[fe80::1%25en0]:4', 'http://a:5?', 'HTTPS://User%3a@a:6', ' http://u%41:p@a:7#fr%41g\t'];
    // From etcd 3.4.23 (member list of a member advertising `typed`, plus the last one).
    assert.deepEqual(parsePeerUrls(typed), ['http://127.0.0.1:34702?x=1&y', 'http://[::1]:34701', 'http://a:1', 'http://a:3#a%20b', 'http://a:5?',
      'http://h%C3%A9:1', 'http://h%C3%A9:2', 'http://uA:p@a:7#fr%41g', 'https://User%3A@a:6', 'https://[fe80::1%25en0]:4', 'unix://sock:1']);
  });

  test("refused with etcd's messages", () => {
    const cases: [string, string][] = [
      ['', 'URL scheme must be http, https, unix, or unixs: '],
      ['foo', 'URL scheme must be http, https, unix, or unixs: foo'],
      ['http:x:1', 'URL address does not have the form "host:port": http:x:1'],
      ['http://127.0.0.1', 'URL address does not have the form "host:port": http://127.0.0.1'],
      ['http://::1:2', 'URL address does not have the form "host:port": http://::1:2'],
      ['http://127.0.0.1:1/', 'URL must not contain a path: http://127.0.0.1:1/'],
      ['http://127.0.0.1:1/%2F', 'URL must not contain a path: http://127.0.0.1:1/%2F'],
      ['%zz', 'parse "%zz": invalid URL escape "%zz"'],
      ['http://h%4:1', 'parse "http://h%4:1": invalid URL escape "%4:"'],
      ['http://h%41:1', 'parse "http://h%41:1": invalid URL escape "%41"'],
      ['http://a:1#%z', 'parse "http://a:1#%z": invalid URL escape "%z"'],
      ['http://a b:1', 'parse "http://a b:1": invalid character " " in host name'],
      ['http://a:b', 'parse "http://a:b": invalid port ":b" after host'],
      ['http://[::1:1', 'parse "http://[::1:1": missing \']\' in host'],
      ['http://u/x@a:1', 'URL address does not have the form "host:port": http://u/x@a:1'],
      ['http://u^@a:1', 'parse "http://u^@a:1": net/url: invalid userinfo'],
      ['://a:1', 'parse "://a:1": missing protocol scheme'],
      ['1http://a:1', 'parse "1http://a:1": first path segment in URL cannot contain colon'],
    ];
    for (const [url, message] of cases) {
      assert.throws(() => parsePeerUrls([url]), (err: unknown) => err instanceof UrlError && err.message === message, url);
    }
    assert.throws(() => parsePeerUrls([]), /no valid URLs given/);
  });

  test('Go helpers: %q, strings.TrimSpace, net.SplitHostPort, net.ParseIP', () => {
    assert.equal(goQuote('a"b\\c\n\x01\x7fé\u00a0'), '"a\\"b\\\\c\\n\\x01\\x7fé\\u00a0"');
    assert.equal(goQuoteList(['a', 'b']), '["a" "b"]');
    assert.equal(goTrimSpace('\u0085 x \ufeff'), 'x \ufeff');
    assert.deepEqual(splitHostPort('[::1]:2'), { host: '::1', port: '2' });
    assert.deepEqual(splitHostPort('h:'), { host: 'h', port: '' });
    for (const bad of ['h', '::1:2', '[::1]', '[::1]x:2', 'a]:1', '']) assert.equal(splitHostPort(bad), null, bad);
    assert.ok(isGoIp('10.0.0.1') && isGoIp('::1') && isGoIp('0.0.0.0'));
    assert.ok(!isGoIp('localhost') && !isGoIp('010.0.0.1') && !isGoIp('fe80::1%en0') && !isGoIp(''));
  });
});
