-- Refunds are not orders: a customer's spend is never negative.
select * from {{ ref('customer_features') }} where spent < 0
