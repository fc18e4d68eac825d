/**
 * The observable a DataStore hands out: the subset of zen-observable /
 * TC39 Observable that app code uses (subscribe with a function or an
 * observer, unsubscribe), so code written against the app builder's
 * TinyBase store runs unchanged.  Delivery is synchronous, in order.
 */
export interface Observer<T> {
  next?: (value: T) => void;
  error?: (err: unknown) => void;
  complete?: () => void;
}

export interface Subscription {
  unsubscribe(): void;
  readonly closed: boolean;
}

export class Observable<T> {
  private readonly subs = new Set<Observer<T>>();

  subscribe(observerOrNext: Observer<T> | ((value: T) => void), error?: (err: unknown) => void, complete?: () => void): Subscription {
    const o: Observer<T> = typeof observerOrNext === "function" ? { next: observerOrNext, error, complete } : observerOrNext;
    this.subs.add(o);
    const subs = this.subs;
    return {
      unsubscribe() { subs.delete(o); },
      get closed() { return !subs.has(o); },
    };
  }

  /** Interop: zen-observable's and RxJS's `from()` look an observable up
   *  by Symbol.observable where the platform or a polyfill defines it (set
   *  below), else by "@@observable"; so `Observable.from(store.observable(c))`
   *  gives their whole API (map, filter, ...) over this one. */
  [Symbol.for("observable")](): this { return this; }
  ["@@observable"](): this { return this; }

  /** @internal Delivers to every subscriber; one throwing does not stop the others. */
  send(value: T): void {
    for (const o of [...this.subs]) {
      try { o.next?.(value); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  get size(): number { return this.subs.size; }
}

const symbolObservable = (Symbol as { observable?: symbol }).observable;
if (typeof symbolObservable === "symbol" && !(symbolObservable in Observable.prototype))
  Object.defineProperty(Observable.prototype, symbolObservable, {
    value: function (this: Observable<unknown>) { return this; },
    configurable: true,
    writable: true,
  });
