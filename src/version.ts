// Versions reported to clients. Concord speaks etcd's v3 API as etcd 3.4 does, and clients
// (etcdctl, clientv3, Kubernetes) gate features on the etcd version a server reports, so the
// server reports the etcd version whose behaviour it matches, and its own version beside it.
export const etcdVersion = '3.4.23';
export const etcdClusterVersion = '3.4.0';
export const concordVersion = '0.1.0';
